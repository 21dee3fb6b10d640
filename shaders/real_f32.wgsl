// The arithmetic type of a kernel built in two precisions: the host puts this snippet (or
// real_f16.wgsl, on devices with shader-f16) first, and the kernel computes in `real`.
alias real = f32;
