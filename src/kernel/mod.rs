//! The neutral home of what a kernel's two twins share: configurations, device records and
//! word layouts, read by `src/gpu` (launchers) and `src/cpu` (twins) alike. The two backends
//! import from here and never from each other (`tests/layering.rs` checks).

pub mod codebook;
pub mod discretize;
pub mod int8_matmul;
pub mod kmeans;
pub mod lsq;
pub mod optimizer;
pub mod weq;
pub mod weq_act;
