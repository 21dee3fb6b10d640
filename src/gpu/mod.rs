//! The GPU backend: the device context, resident tensors, the shared dispatch plumbing, and
//! one launcher module per shader in `shaders/` (same name). Nothing here knows about files
//! or tensor names.

pub mod context;
pub mod dequantize;
pub mod dispatch;
pub mod fake_quant;
pub mod quantize_pack;
pub mod segments;
pub mod tensor;

pub use context::{Context, WorkLimits, describe_adapter, list_adapters};
pub use dispatch::{Shader, WORKGROUP_SIZE, Window};
pub use tensor::{ElemType, GpuTensor};

/// Every kernel family's composed WGSL, for validation and translation tests.
pub fn all_shaders() -> Vec<Shader> {
    vec![fake_quant::SHADER, quantize_pack::SHADER, dequantize::SHADER]
}
