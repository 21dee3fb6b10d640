//! What both twins of `shaders/kmeans.wgsl` share: how the elements are cut among threads,
//! which fixes the order of every f32 addition of the cluster sums.

/// Elements per thread: at least 256 (a thread's record costs no more than its loads), and
/// 16 per cluster so the records stay at most half a byte per element. A constant of `bits`
/// (device limits never change it: it fixes the order of the sums on both backends).
pub const fn elems_per_thread(bits: u32) -> usize {
    let per = 16usize << bits;
    if per < 256 { 256 } else { per }
}
