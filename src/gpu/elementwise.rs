//! Plumbing for elementwise kernels (relu, optimizer): same-length tensors cut into chunks
//! that fit one binding, each chunk bound through windows sharing one base index.

use super::context::Context;
use super::dispatch::{WORKGROUP_SIZE, Window, chunks};
use super::tensor::{ElemType, GpuTensor};
use super::tiles::shared_windows;
use crate::error::{Error, Result};

/// One chunk: its element count, the base index inside the windows, one window per tensor,
/// and the workgroups for one element per thread.
pub struct Chunk {
    /// Global index of the chunk's first element.
    pub first: u64,
    /// Elements.
    pub n: u32,
    /// Index of the chunk's first element in every window.
    pub base: u32,
    /// Windows, in the order the tensors were given.
    pub windows: Vec<Window>,
    /// Workgroups at one element per thread.
    pub workgroups: u32,
}

/// Calls `f` for every chunk of the f32 `tensors` (all of one length).
pub fn for_each_chunk(
    ctx: &Context,
    op: &str,
    tensors: &[&GpuTensor],
    mut f: impl FnMut(&Chunk) -> Result<()>,
) -> Result<()> {
    let Some(first) = tensors.first() else {
        return Ok(());
    };
    for t in tensors {
        t.expect_dtype(op, ElemType::F32)?;
        if t.numel() != first.numel() {
            return Err(Error::shape(
                op,
                format!("{} elements beside {}", t.numel(), first.numel()),
            ));
        }
    }
    // Chunks bounded by the grid too: one element per thread.
    let grid =
        u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2) * u64::from(WORKGROUP_SIZE);
    for range in chunks(ctx, first.numel() as u64, 64) {
        let mut start = range.start;
        while start < range.end {
            let end = (start + grid).min(range.end);
            let windows = shared_windows(ctx, op, tensors, &(start..end), 4)?;
            let n = (end - start) as u32;
            f(&Chunk {
                first: start,
                n,
                base: windows[0].base,
                windows,
                workgroups: n.div_ceil(WORKGROUP_SIZE),
            })?;
            start = end;
        }
    }
    Ok(())
}
