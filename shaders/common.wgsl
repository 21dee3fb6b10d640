// Shared by every wgquant kernel; the host prepends it to each kernel file.

const WORKGROUP_SIZE: u32 = 256u;

// Flat index of this workgroup in a grid the host folded into rows of `num_workgroups.x`
// (a dispatch is limited to 65,535 workgroups per dimension).
fn flat_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
