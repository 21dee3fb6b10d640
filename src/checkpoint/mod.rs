//! Checkpoints: safetensors in and out (single or sharded, streamed), per-tensor rules, the
//! plan of a run, reports. Knows about files and tensor names; knows nothing about WGSL.

pub mod compression;
pub mod dequantize;
pub mod file;
pub mod gguf;
pub mod inspect;
pub mod output;
pub mod plan;
pub mod quantize;
pub mod report;
pub mod rules;
pub mod source;
pub mod synthetic;
pub mod writer;

pub use dequantize::dequantize_file;
pub use file::Checkpoint;
pub use inspect::inspect_file;
pub use quantize::{QuantizeOptions, quantize_file};
pub use report::Report;
