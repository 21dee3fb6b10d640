//! The CPU backend: every GPU kernel's twin over host slices, parallel with rayon. It is the
//! reference the GPU is tested against and the fallback when no adapter is usable. Nothing
//! here knows about files or tensor names.

pub mod affine_params;
pub mod clip_search;
pub mod codebook_assign;
pub mod codebook_dequantize;
pub mod copy;
pub mod dequantize;
pub mod discretize;
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
pub mod relu;
pub mod requantize;
pub mod segments;
pub mod softmax_xent;
pub mod weq_act_forward;
pub mod weq_act_histogram;
pub mod weq_act_sweep;
pub mod weq_exact;
pub mod weq_histogram;
pub mod weq_sweep;
