//! The plumbing every launcher shares: host-composed WGSL, cached pipelines created inside
//! error scopes, bind groups, grids folded into 2-D past the per-dimension limit, windows onto
//! buffers larger than one binding, and submit-and-wait with errors turned into `Error`s.

use wgpu::util::DeviceExt;

use super::context::Context;
use crate::error::{Error, Result};

/// Threads per workgroup in every wgquant kernel (the WebGPU guaranteed minimum maximum).
pub const WORKGROUP_SIZE: u32 = 256;

/// WGSL shared by every kernel: the flat workgroup index of a folded 2-D grid.
pub(crate) const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");

/// A kernel's WGSL as the host composes it: shared snippets followed by the kernel file.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// The kernel family's name, equal to its file in `shaders/` and its modules in
    /// `src/gpu` and `src/cpu`.
    pub name: &'static str,
    /// Source pieces concatenated in order.
    pub parts: &'static [&'static str],
}

impl Shader {
    /// The full WGSL text handed to the compiler.
    pub fn source(&self) -> String {
        self.parts.concat()
    }
}

impl Context {
    /// The compute pipeline for `entry` of `shader`, compiled once and cached. Compilation runs
    /// inside a validation error scope so a broken shader names its kernel instead of panicking.
    pub fn pipeline(&self, shader: &Shader, entry: &str) -> Result<wgpu::ComputePipeline> {
        self.pipeline_with(shader, entry, &PipelineOptions::default())
    }

    /// [`Context::pipeline`] specialised by `opts` (WGSL `override` constants, workgroup-memory
    /// zeroing), cached per (shader, entry point, options). Kernels specialise on bit width or
    /// weight kind this way, so the device compiler folds the branches away. Two variants of
    /// one kernel family composed from different parts (an f16 and an f32 build) are cached
    /// apart.
    pub fn pipeline_with(
        &self,
        shader: &Shader,
        entry: &str,
        opts: &PipelineOptions<'_>,
    ) -> Result<wgpu::ComputePipeline> {
        // The parts' addresses identify a composition: each part is a `&'static str`.
        let parts: Vec<String> = shader
            .parts
            .iter()
            .map(|p| format!("{:x}+{}", p.as_ptr() as usize, p.len()))
            .collect();
        let mut label = format!("{}::{}", shader.name, entry);
        for (name, value) in opts.constants {
            label.push_str(&format!(" {name}={value}"));
        }
        let key = format!(
            "{label} zero={} [{}]",
            opts.zero_workgroup_memory,
            parts.join(",")
        );
        if let Some(p) = self.pipeline_cache(|c| c.get(&key).cloned()) {
            return Ok(p);
        }
        let device = self.device();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name),
            source: wgpu::ShaderSource::Wgsl(shader.source().into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: opts.constants,
                zero_initialize_workgroup_memory: opts.zero_workgroup_memory,
            },
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::ShaderValidation {
                kernel: label,
                msg: err.to_string(),
            });
        }
        self.pipeline_cache(|c| c.insert(key, pipeline.clone()));
        Ok(pipeline)
    }

    /// A small uniform buffer holding one parameter struct.
    pub(crate) fn uniform<P: bytemuck::Pod>(&self, label: &str, params: &P) -> wgpu::Buffer {
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// A read-only storage buffer initialised from a slice (record tables, lookup tables).
    /// Empty slices get one zero word so the binding stays valid.
    pub(crate) fn storage_init<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let contents: &[u8] = if bytes.is_empty() { &[0u8; 4] } else { bytes };
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            })
    }

    /// The grid for `workgroups` workgroups: one row while it fits the per-dimension limit,
    /// folded into rows of the maximum width past it. Kernels recover the flat index with
    /// `flat_workgroup` from common.wgsl and skip the tail of the last row.
    pub fn grid(&self, workgroups: u32) -> Result<(u32, u32)> {
        let max = self.work_limits().max_workgroups_per_dim;
        let x = workgroups.clamp(1, max);
        let y = workgroups.div_ceil(x).max(1);
        if y > max {
            return Err(Error::param(
                "dispatch",
                format!("{workgroups} workgroups exceed a {max}x{max} grid"),
            ));
        }
        Ok((x, y))
    }

    /// Records one dispatch of `pipeline` over `workgroups` workgroups with `bindings`
    /// (binding number, resource) in bind group 0.
    pub fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        bindings: &[(u32, wgpu::BindingResource<'_>)],
        workgroups: u32,
    ) -> Result<()> {
        if workgroups == 0 {
            return Ok(());
        }
        let (x, y) = self.grid(workgroups)?;
        let entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: resource.clone(),
            })
            .collect();
        let bind_group = self.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }

    /// Records work with `record` into a fresh encoder, submits it and waits for that
    /// submission (not for work others submitted to the queue). Validation and out-of-memory
    /// errors raised meanwhile come back as [`Error::Device`] naming `op`.
    pub fn run<T>(
        &self,
        op: &str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<T>,
    ) -> Result<T> {
        self.run_indexed(op, record).map(|(out, _)| out)
    }

    /// [`Context::run`], also returning the submission's index (for a later wait on it, e.g.
    /// a buffer mapping's callback).
    pub fn run_indexed<T>(
        &self,
        op: &str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<T>,
    ) -> Result<(T, wgpu::SubmissionIndex)> {
        self.scoped(op, || {
            let mut encoder = self
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
            let out = record(&mut encoder)?;
            let index = self.queue().submit([encoder.finish()]);
            self.wait_for(op, index.clone())?;
            Ok((out, index))
        })
    }

    /// Runs `f` inside validation and out-of-memory error scopes.
    pub(crate) fn scoped<T>(&self, op: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let device = self.device();
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let out = f();
        let oom_err = pollster::block_on(oom.pop());
        let validation_err = pollster::block_on(validation.pop());
        if let Some(e) = oom_err.or(validation_err) {
            // A lost device reports through its callback, which runs when the device is polled.
            let _ = device.poll(wgpu::PollType::Poll);
            let msg = match self.lost_reason() {
                Some(reason) => format!("the GPU device was lost ({reason})"),
                None => e.to_string(),
            };
            return Err(Error::Device {
                op: op.to_string(),
                msg,
            });
        }
        out
    }

    /// Blocks until submission `index` has finished and its callbacks have run; work other
    /// threads (a host engine) submitted later is not waited for.
    pub fn wait_for(&self, op: &str, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device()
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| Error::Device {
                op: op.to_string(),
                msg: e.to_string(),
            })
    }
}

/// How [`Context::pipeline_with`] specialises a pipeline.
#[derive(Clone, Copy, Debug)]
pub struct PipelineOptions<'a> {
    /// Values of WGSL `override` constants, by name.
    pub constants: &'a [(&'a str, f64)],
    /// Zero workgroup memory when each workgroup starts (WebGPU's default). A kernel that
    /// writes every workgroup element before reading it turns this off: wgpu's GL backend
    /// expands the zeroing inline, and llvmpipe then takes 20–30 s to compile a 64×64-tile
    /// matmul instead of 0.5 s (measured here, Mesa 22.3).
    pub zero_workgroup_memory: bool,
}

impl Default for PipelineOptions<'_> {
    fn default() -> Self {
        Self {
            constants: &[],
            zero_workgroup_memory: true,
        }
    }
}

/// A byte range of a buffer bound as one storage binding, and where an element range of the
/// tensor begins inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Byte offset of the binding (a multiple of the device's storage offset alignment).
    pub offset: u64,
    /// Byte size of the binding (a multiple of 4).
    pub size: u64,
    /// Index, in elements, of the range's first element inside the binding.
    pub base: u32,
}

impl Window {
    /// This window as a binding of `buffer`.
    pub fn bind<'a>(&self, buffer: &'a wgpu::Buffer) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.size),
        })
    }
}

/// The smallest aligned window of 4-byte elements `[first, first + len)` of a tensor that starts
/// `byte_offset` bytes into its buffer.
pub fn window(ctx: &Context, byte_offset: u64, first: u64, len: u64) -> Result<Window> {
    window_of(ctx, byte_offset, first, len, 4)
}

/// [`window`] for elements of `elem_size` bytes (a power of two dividing the offset alignment,
/// so the window starts on an element boundary when `byte_offset` is a multiple of it).
pub fn window_of(
    ctx: &Context,
    byte_offset: u64,
    first: u64,
    len: u64,
    elem_size: u64,
) -> Result<Window> {
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(4));
    let start = byte_offset + first * elem_size;
    let offset = start / align * align;
    if !(start - offset).is_multiple_of(elem_size) {
        return Err(Error::param(
            "window",
            format!("byte offset {byte_offset} is not a multiple of the {elem_size}-byte element"),
        ));
    }
    let base = (start - offset) / elem_size;
    let size = ((base + len.max(1)) * elem_size).max(4);
    if size > ctx.work_limits().max_binding_bytes {
        return Err(Error::param(
            "window",
            format!(
                "{size} bytes exceed the binding limit of {}",
                ctx.work_limits().max_binding_bytes
            ),
        ));
    }
    Ok(Window {
        offset,
        size,
        base: base as u32,
    })
}

/// Splits `n` elements into chunks that each fit one binding with room for alignment, every
/// chunk but the last a multiple of `granule` elements.
pub fn chunks(ctx: &Context, n: u64, granule: u64) -> Vec<std::ops::Range<u64>> {
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(4));
    let max_elems = (ctx.work_limits().max_binding_bytes.saturating_sub(align)) / 4;
    let granule = granule.max(1);
    let per_chunk = (max_elems / granule * granule).max(granule);
    spans(0..n, per_chunk).collect()
}

/// `range` cut into consecutive spans of `step` (at least 1), the last one shorter: the
/// chunk loop of every launcher that splits work over bindings or grid limits.
pub fn spans<T>(range: std::ops::Range<T>, step: T) -> impl Iterator<Item = std::ops::Range<T>>
where
    T: Copy + Ord + std::ops::Add<Output = T>,
{
    let end = range.end;
    let span = move |start: T| (start < end).then(|| start..std::cmp::min(start + step, end));
    std::iter::successors(span(range.start), move |r| span(r.end))
}

#[cfg(test)]
mod tests {
    use super::spans;

    #[test]
    fn spans_cover_the_range_in_order() {
        assert_eq!(spans(0u64..0, 4).count(), 0);
        assert_eq!(spans(5usize..5, 1).count(), 0);
        assert_eq!(spans(0u64..8, 4).collect::<Vec<_>>(), [0..4, 4..8]);
        assert_eq!(
            spans(3usize..10, 3).collect::<Vec<_>>(),
            [3..6, 6..9, 9..10]
        );
        assert_eq!(spans(7u32..9, 100).collect::<Vec<_>>(), [7..9]);
    }
}
