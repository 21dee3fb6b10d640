//! `Context`: the device and queue every kernel runs on, created here or adopted from a host
//! engine, with the limits that decide how work is chunked and a cache of compiled pipelines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Limits that decide how a kernel splits its work: the largest byte range bound at once and
/// the largest workgroup count per grid dimension. Tests lower them to exercise chunking and
/// 2-D grids on small inputs; normally they are the device's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkLimits {
    /// Bytes of one storage binding (a window onto a larger buffer).
    pub max_binding_bytes: u64,
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dim: u32,
}

/// A device and queue with what wgquant needs to know about them.
///
/// Cloning is cheap and shares the device, queue and pipeline cache.
#[derive(Clone)]
pub struct Context {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    work: WorkLimits,
    pipelines: Arc<Mutex<HashMap<String, wgpu::ComputePipeline>>>,
    /// The WGSL language extensions of the instance the device came from.
    wgsl_features: wgpu::WgslLanguageFeatures,
    /// One-element read-only tensors bound where a kernel's optional input is absent, made once.
    placeholders: Arc<Mutex<HashMap<super::ElemType, super::GpuTensor>>>,
    /// Why the device was lost, once it has been (only tracked on devices wgquant created).
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.adapter_summary())
            .field("work", &self.work)
            .finish()
    }
}

/// Preference among adapters: a real GPU first, a software rasteriser last. Within a kind,
/// Vulkan/Metal/DX12 before GL because they expose more optional features (f16, subgroups).
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (kind, api)
}

/// One line per adapter: name, backend and kind, as shown in errors and by the CLI.
pub fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

fn new_instance() -> wgpu::Instance {
    // Honours WGPU_BACKEND (and the other WGPU_* instance variables).
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu can see under the current `WGPU_BACKEND`.
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = new_instance();
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    pollster::block_on(instance.enumerate_adapters(backends))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

/// The optional device features wgquant's kernels can use when present.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP
}

impl Context {
    /// Picks an adapter and creates a device on it.
    ///
    /// `WGPU_BACKEND` restricts the backends and `WGPU_ADAPTER_NAME` (a case-insensitive
    /// substring) selects an adapter by name; otherwise a hardware GPU is preferred and a
    /// software adapter (llvmpipe, lavapipe, WARP) is the fallback. The device gets the
    /// adapter's own limits, not wgpu's conservative defaults.
    pub fn new() -> Result<Self> {
        let instance = new_instance();
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let found = || {
            let names: Vec<String> = adapters
                .iter()
                .map(|a| describe_adapter(&a.get_info()))
                .collect();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let wanted_name = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .map(|s| s.to_lowercase());
        let candidate = adapters
            .iter()
            .filter(|a| match &wanted_name {
                Some(n) => a.get_info().name.to_lowercase().contains(n),
                None => true,
            })
            .min_by_key(|a| adapter_rank(&a.get_info()));
        let Some(adapter) = candidate else {
            let reason = match &wanted_name {
                Some(n) => format!("none matches WGPU_ADAPTER_NAME='{n}'"),
                None => "wgpu found no adapter".to_string(),
            };
            return Err(Error::NoAdapter {
                reason,
                found: found(),
            });
        };
        let mut ctx = Self::from_adapter(adapter)?;
        ctx.wgsl_features = instance.wgsl_language_features();
        Ok(ctx)
    }

    /// Creates a device on a given adapter with its own limits and the optional features
    /// wgquant uses.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgquant"),
            required_features: adapter.features() & wanted_features(),
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::RequestDevice {
                adapter: describe_adapter(&info),
                msg: e.to_string(),
            }
        })?;
        let ctx = Self::from_device(device, queue);
        // Our own device: record its loss so later errors can say what happened. (An adopted
        // device keeps its host's callback.)
        let lost = ctx.lost.clone();
        ctx.device.set_device_lost_callback(move |reason, msg| {
            let mut slot = lost.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some(format!("{reason:?}: {msg}"));
        });
        Ok(ctx)
    }

    /// Adopts a host engine's device and queue. wgquant records into the host's command
    /// encoders through each kernel's `encode` form and never creates another device.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let limits = device.limits();
        let work = WorkLimits {
            max_binding_bytes: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
        };
        Self {
            device,
            queue,
            info,
            limits,
            work,
            pipelines: Arc::new(Mutex::new(HashMap::new())),
            // An adopted device's instance is the host's; these are the same for every
            // instance of this wgpu build, asked of one without backends (no driver touched).
            wgsl_features: wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: wgpu::Backends::empty(),
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            })
            .wgsl_language_features(),
            placeholders: Arc::new(Mutex::new(HashMap::new())),
            lost: Arc::new(Mutex::new(None)),
        }
    }

    /// The WGSL language extensions shaders may use on this context.
    pub fn wgsl_features(&self) -> wgpu::WgslLanguageFeatures {
        self.wgsl_features.clone()
    }

    /// A one-element zero tensor of `dtype` to bind where a kernel's optional input (a bias, a
    /// zero point) is absent: created once per context, so encoding allocates nothing for it.
    /// Kernels only read it.
    pub fn placeholder(&self, dtype: super::ElemType) -> Result<super::GpuTensor> {
        let mut map = self.placeholders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(&dtype) {
            return Ok(t.clone());
        }
        let t = super::GpuTensor::zeros(self, &[1], dtype)?;
        map.insert(dtype, t.clone());
        Ok(t)
    }

    /// The same device with lower work limits (never higher than the device's), so tests can
    /// drive chunked bindings and folded 2-D grids with small tensors.
    pub fn with_work_limits(&self, work: WorkLimits) -> Self {
        let device_max = Self::from_device(self.device.clone(), self.queue.clone()).work;
        let mut ctx = self.clone();
        ctx.work = WorkLimits {
            max_binding_bytes: work.max_binding_bytes.min(device_max.max_binding_bytes),
            max_workgroups_per_dim: work
                .max_workgroups_per_dim
                .clamp(1, device_max.max_workgroups_per_dim),
        };
        ctx
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// What the adapter says about itself.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// One line naming the adapter, its backend and kind.
    pub fn adapter_summary(&self) -> String {
        describe_adapter(&self.info)
    }

    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The limits kernels chunk their work by.
    pub fn work_limits(&self) -> WorkLimits {
        self.work
    }

    /// Whether the device runs f16 arithmetic in shaders.
    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// Whether this is a software adapter (llvmpipe, lavapipe, WARP).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Why the device was lost, if it was (devices wgquant created).
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` on the pipeline cache (compiled pipelines keyed by shader, entry and overrides).
    pub(crate) fn pipeline_cache<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, wgpu::ComputePipeline>) -> T,
    ) -> T {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut guard = self
            .pipelines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}
