// The arithmetic type of a kernel built in two precisions, f16 variant: only for devices with
// shader-f16 (the `enable` must open the module, so the host puts this snippet first).
enable f16;
alias real = f16;
