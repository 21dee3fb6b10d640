//! Checkpoints: safetensors in and out, which tensors to quantize, reports. Knows about files
//! and tensor names; knows nothing about WGSL.

pub mod compression;
pub mod dequantize;
pub mod file;
pub mod inspect;
pub mod quantize;
pub mod report;
pub mod synthetic;

pub use dequantize::dequantize_file;
pub use file::Checkpoint;
pub use inspect::inspect_file;
pub use quantize::{QuantizeOptions, quantize_file};
pub use report::Report;
