//! The GPU backend: the device context, resident tensors, the shared dispatch plumbing, and
//! one launcher module per shader in `shaders/` (same name). Nothing here knows about files
//! or tensor names.

pub mod affine_params;
pub mod clip_search;
pub mod codebook_assign;
pub mod codebook_dequantize;
pub mod context;
pub mod copy;
pub mod dequantize;
pub mod discretize;
pub mod dispatch;
pub mod elementwise;
pub mod fake_quant;
pub mod histogram;
pub mod int8_matmul;
pub mod kmeans;
pub mod lsq;
pub mod lsq_init;
pub mod matmul;
pub mod minmax;
pub mod optimizer;
pub mod prune;
pub mod qmatmul;
pub mod quantize_pack;
pub mod qweight;
pub mod relu;
pub mod requantize;
pub mod segments;
pub mod softmax_xent;
pub mod tensor;
pub mod tiles;
pub mod weq_act_forward;
pub mod weq_act_histogram;
pub mod weq_act_sweep;
pub mod weq_histogram;
pub mod weq_sweep;

pub use context::{Context, WorkLimits, describe_adapter, list_adapters};
pub use dispatch::{PipelineOptions, Shader, WORKGROUP_SIZE, Window};
pub use tensor::{ElemType, GpuTensor};

/// Every kernel family's composed WGSL, for validation and translation tests.
pub fn all_shaders() -> Vec<Shader> {
    vec![
        fake_quant::SHADER,
        quantize_pack::SHADER,
        dequantize::SHADER,
        minmax::SHADER,
        affine_params::SHADER,
        histogram::SHADER,
        clip_search::SHADER,
        codebook_assign::SHADER,
        codebook_dequantize::SHADER,
        matmul::SHADER,
        lsq::SHADER,
        lsq_init::SHADER,
        relu::SHADER,
        optimizer::SHADER,
        softmax_xent::SHADER,
        weq_histogram::SHADER,
        weq_sweep::SHADER,
        copy::SHADER,
        discretize::SHADER,
        kmeans::SHADER,
        prune::SHADER,
        qmatmul::SHADER,
        qmatmul::SHADER_F16,
        int8_matmul::SHADER,
        requantize::SHADER,
        weq_act_histogram::SHADER,
        weq_act_sweep::SHADER,
        weq_act_forward::SHADER,
    ]
}
