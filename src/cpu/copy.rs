//! CPU twin of `shaders/copy.wgsl`: a word copy, parallel with rayon, and the single-threaded
//! `copy_from_slice` beside it — the host's roofline in benches.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Words per rayon task: large enough to amortise scheduling, small enough to balance.
const TASK_ELEMS: usize = 1 << 16;

fn check(op: &str, src: &[u32], dst: &[u32]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::shape(
            op,
            format!("{} words into {}", src.len(), dst.len()),
        ));
    }
    Ok(())
}

/// `dst = src` on every core.
pub fn copy(src: &[u32], dst: &mut [u32]) -> Result<()> {
    check("copy", src, dst)?;
    dst.par_chunks_mut(TASK_ELEMS)
        .zip(src.par_chunks(TASK_ELEMS))
        .for_each(|(d, s)| d.copy_from_slice(s));
    Ok(())
}

/// The plain form: one `copy_from_slice` (memcpy) on the calling thread.
pub fn copy_reference(src: &[u32], dst: &mut [u32]) -> Result<()> {
    check("copy_reference", src, dst)?;
    dst.copy_from_slice(src);
    Ok(())
}
