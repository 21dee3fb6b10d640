//! CPU twin of `shaders/copy.wgsl`: a parallel word copy, the host roofline.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// `dst = src`, in parallel blocks.
pub fn copy(src: &[u32], dst: &mut [u32]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::shape(
            "copy",
            format!("{} words into {}", src.len(), dst.len()),
        ));
    }
    dst.par_chunks_mut(1 << 16)
        .zip(src.par_chunks(1 << 16))
        .for_each(|(d, s)| d.copy_from_slice(s));
    Ok(())
}
