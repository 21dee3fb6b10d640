//! `GpuTensor`: a typed view (buffer, byte offset, shape) onto device memory, owned or
//! wrapped from a caller's buffer without copying, with explicit upload and download.

use super::context::Context;
use crate::error::{Error, Result};

/// Element type of a [`GpuTensor`]. Every kernel works on 4-byte elements; packed codes are
/// `U32` words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    /// 32-bit float.
    F32,
    /// 32-bit unsigned integer (packed codes, counts).
    U32,
    /// 32-bit signed integer (zero points, integer accumulators).
    I32,
}

impl ElemType {
    /// Bytes per element.
    pub const fn size(self) -> u64 {
        4
    }
}

/// Bytes moved per staging copy, so uploads and downloads never need a second full-size copy.
const STAGING_CHUNK: u64 = 64 << 20;

/// A tensor resident on the device: a buffer, the byte offset where it starts, its shape and
/// element type. Several tensors may share one buffer.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    buffer: wgpu::Buffer,
    offset: u64,
    shape: Vec<usize>,
    dtype: ElemType,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl GpuTensor {
    /// Usages of buffers wgquant creates: kernels read and write them, copies move them.
    pub const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
        .union(wgpu::BufferUsages::COPY_SRC)
        .union(wgpu::BufferUsages::COPY_DST);

    /// A new zero-filled tensor.
    pub fn zeros(ctx: &Context, shape: &[usize], dtype: ElemType) -> Result<Self> {
        let bytes = (numel(shape) as u64 * dtype.size()).max(4);
        let limit = ctx.limits().max_buffer_size;
        if bytes > limit {
            return Err(Error::TooLarge {
                op: "GpuTensor::zeros".into(),
                bytes,
                limit,
            });
        }
        let buffer = ctx.scoped("GpuTensor::zeros", || {
            Ok(ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgquant tensor"),
                size: bytes,
                usage: Self::USAGE,
                mapped_at_creation: false,
            }))
        })?;
        Ok(Self {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads host data into a new tensor.
    pub fn upload<T: bytemuck::Pod>(
        ctx: &Context,
        data: &[T],
        shape: &[usize],
        dtype: ElemType,
    ) -> Result<Self> {
        let t = Self::zeros(ctx, shape, dtype)?;
        t.write(ctx, data)?;
        Ok(t)
    }

    /// Uploads f32 data into a new tensor.
    pub fn from_f32(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<Self> {
        Self::upload(ctx, data, shape, ElemType::F32)
    }

    /// Uploads u32 data into a new tensor.
    pub fn from_u32(ctx: &Context, data: &[u32], shape: &[usize]) -> Result<Self> {
        Self::upload(ctx, data, shape, ElemType::U32)
    }

    /// Uploads i32 data into a new tensor.
    pub fn from_i32(ctx: &Context, data: &[i32], shape: &[usize]) -> Result<Self> {
        Self::upload(ctx, data, shape, ElemType::I32)
    }

    /// Wraps `shape` elements of a caller's buffer starting at byte `offset`, without copying.
    /// The buffer needs `STORAGE` usage (and `COPY_SRC` to be downloaded); `offset` must be a
    /// multiple of 4.
    pub fn wrap(
        buffer: wgpu::Buffer,
        offset: u64,
        shape: &[usize],
        dtype: ElemType,
    ) -> Result<Self> {
        if !offset.is_multiple_of(4) {
            return Err(Error::param(
                "GpuTensor::wrap",
                format!("offset {offset} is not a multiple of 4"),
            ));
        }
        // Checked: a caller's shape must not wrap into a small size that then "fits".
        let bytes = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d as u64))
            .filter(|b| b.checked_add(offset).is_some())
            .ok_or_else(|| {
                Error::shape(
                    "GpuTensor::wrap",
                    format!("shape {shape:?} overflows a byte size"),
                )
            })?;
        if offset + bytes > buffer.size() {
            return Err(Error::shape(
                "GpuTensor::wrap",
                format!(
                    "{bytes} bytes at offset {offset} overrun a buffer of {} bytes",
                    buffer.size()
                ),
            ));
        }
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::param(
                "GpuTensor::wrap",
                "the buffer lacks STORAGE usage",
            ));
        }
        Ok(Self {
            buffer,
            offset,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A view of `len` elements starting `first` elements into this tensor, sharing its buffer.
    pub fn slice(&self, first: usize, shape: &[usize]) -> Result<Self> {
        let len = numel(shape);
        if first + len > self.numel() {
            return Err(Error::shape(
                "GpuTensor::slice",
                format!(
                    "[{first}, {}) is outside {} elements",
                    first + len,
                    self.numel()
                ),
            ));
        }
        Ok(Self {
            buffer: self.buffer.clone(),
            offset: self.offset + first as u64 * self.dtype.size(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// The same memory under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.numel() {
            return Err(Error::shape(
                "GpuTensor::reshape",
                format!("{:?} -> {:?}", self.shape, shape),
            ));
        }
        Ok(Self {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Byte offset of element 0 in the buffer.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> ElemType {
        self.dtype
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> u64 {
        self.numel() as u64 * self.dtype.size()
    }

    /// Whether two tensors occupy overlapping bytes of the same buffer.
    pub fn overlaps(&self, other: &GpuTensor) -> bool {
        self.buffer == other.buffer
            && self.offset < other.offset + other.byte_len()
            && other.offset < self.offset + self.byte_len()
    }

    /// Whether two tensors are exactly the same bytes of the same buffer.
    pub fn same_memory(&self, other: &GpuTensor) -> bool {
        self.buffer == other.buffer
            && self.offset == other.offset
            && self.byte_len() == other.byte_len()
    }

    /// Fails unless the tensor has element type `dtype`.
    pub fn expect_dtype(&self, op: &str, dtype: ElemType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::UnsupportedDType {
                op: op.to_string(),
                dtype: format!("{:?} (expected {:?})", self.dtype, dtype),
            });
        }
        Ok(())
    }

    /// Overwrites the tensor with host data of the same length (through the queue, so it is
    /// ordered before work submitted afterwards).
    pub fn write<T: bytemuck::Pod>(&self, ctx: &Context, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() as u64 != self.byte_len() {
            return Err(Error::shape(
                "GpuTensor::write",
                format!("{} bytes into a tensor of {}", bytes.len(), self.byte_len()),
            ));
        }
        ctx.scoped("GpuTensor::write", || {
            for (i, piece) in bytes.chunks(STAGING_CHUNK as usize).enumerate() {
                let at = self.offset + i as u64 * STAGING_CHUNK;
                ctx.queue().write_buffer(&self.buffer, at, piece);
            }
            Ok(())
        })
    }

    /// Fills every element with the bit pattern `word` (tests poison outputs this way).
    pub fn fill_bits(&self, ctx: &Context, word: u32) -> Result<()> {
        let n = self.numel().min((STAGING_CHUNK / 4) as usize);
        let block = vec![word; n.max(1)];
        let mut done = 0usize;
        ctx.scoped("GpuTensor::fill_bits", || {
            while done < self.numel() {
                let take = (self.numel() - done).min(block.len());
                let at = self.offset + done as u64 * 4;
                ctx.queue()
                    .write_buffer(&self.buffer, at, bytemuck::cast_slice(&block[..take]));
                done += take;
            }
            Ok(())
        })
    }

    /// Copies the tensor back to the host as a vector of `T` (waits for the copy, which the
    /// queue orders after all work submitted before it).
    /// `T` may be any plain-data type whose size divides the tensor's bytes, so an array of
    /// structs can be read from a u32 tensor.
    pub fn download<T: bytemuck::Pod>(&self, ctx: &Context) -> Result<Vec<T>> {
        let total = self.byte_len();
        let item = std::mem::size_of::<T>() as u64;
        if item == 0 || !total.is_multiple_of(item) {
            return Err(Error::UnsupportedDType {
                op: "GpuTensor::download".into(),
                dtype: format!("{total} bytes into {}", std::any::type_name::<T>()),
            });
        }
        let mut out: Vec<T> = vec![T::zeroed(); (total / item) as usize];
        if total == 0 {
            return Ok(out);
        }
        let staging_size = total.min(STAGING_CHUNK);
        let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgquant download"),
            size: staging_size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let out_bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        let mut done = 0u64;
        while done < total {
            let take = (total - done).min(staging_size);
            let ((), index) = ctx.run_indexed("GpuTensor::download", |enc| {
                enc.copy_buffer_to_buffer(&self.buffer, self.offset + done, &staging, 0, take);
                Ok(())
            })?;
            read_mapped(
                ctx,
                &staging,
                take,
                index,
                &mut out_bytes[done as usize..(done + take) as usize],
            )?;
            done += take;
        }
        Ok(out)
    }

    /// Downloads an f32 tensor.
    pub fn to_f32(&self, ctx: &Context) -> Result<Vec<f32>> {
        self.expect_dtype("GpuTensor::to_f32", ElemType::F32)?;
        self.download(ctx)
    }

    /// Downloads a u32 tensor.
    pub fn to_u32(&self, ctx: &Context) -> Result<Vec<u32>> {
        self.expect_dtype("GpuTensor::to_u32", ElemType::U32)?;
        self.download(ctx)
    }

    /// Downloads an i32 tensor.
    pub fn to_i32(&self, ctx: &Context) -> Result<Vec<i32>> {
        self.expect_dtype("GpuTensor::to_i32", ElemType::I32)?;
        self.download(ctx)
    }
}

/// Maps the first `len` bytes of a MAP_READ buffer and copies them into `dst`.
/// `index` is the submission that filled it, whose wait also runs the mapping's callback.
fn read_mapped(
    ctx: &Context,
    staging: &wgpu::Buffer,
    len: u64,
    index: wgpu::SubmissionIndex,
    dst: &mut [u8],
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, 0..len, move |r| {
        // The receiver outlives the poll below; a failed send cannot happen.
        let _ = tx.send(r);
    });
    ctx.wait_for("GpuTensor::download", index)?;
    let mapped = rx.recv().map_err(|e| Error::Readback {
        op: "GpuTensor::download".into(),
        msg: e.to_string(),
    })?;
    mapped.map_err(|e| Error::Readback {
        op: "GpuTensor::download".into(),
        msg: e.to_string(),
    })?;
    {
        let view = staging
            .get_mapped_range(0..len)
            .map_err(|e| Error::Readback {
                op: "GpuTensor::download".into(),
                msg: e.to_string(),
            })?;
        dst.copy_from_slice(&view);
    }
    staging.unmap();
    Ok(())
}
