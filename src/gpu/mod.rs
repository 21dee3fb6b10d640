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

impl Context {
    /// Builds every kernel's pipelines now (their default specialisations; those a kernel
    /// specialises by bit width or tile size at first use are built then), so a host engine
    /// pays shader compilation at start-up rather than in its first frame. Returns the
    /// number of pipelines built. Kernels needing f16 are skipped on devices without it.
    pub fn precompile(&self) -> crate::Result<usize> {
        let mut built = 0;
        for shader in all_shaders() {
            let source = shader.source();
            if source.contains("enable f16;") && !self.has_f16() {
                continue;
            }
            let module = naga::front::wgsl::parse_str(&source).map_err(|e| {
                crate::Error::ShaderValidation {
                    kernel: shader.name.to_string(),
                    msg: e.emit_to_string(&source),
                }
            })?;
            for entry in &module.entry_points {
                if entry.stage == naga::ShaderStage::Compute {
                    self.pipeline(&shader, &entry.name)?;
                    built += 1;
                }
            }
        }
        Ok(built)
    }
}

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
