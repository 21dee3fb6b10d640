//! wgquant: neural-network quantization on any GPU through WebGPU compute shaders (WGSL via
//! `wgpu`), with a CPU implementation of every operation beside it.
//!
//! Layers, top to bottom (data flows down, never up): the CLI (`src/main.rs`),
//! [`checkpoint`] (files), [`quant`] (the methods), and the two backends [`gpu`] and [`cpu`].
//! [`format`](mod@format) holds the packed layout and quantized representation; [`affine`] the numerics
//! both backends share.

pub use wgpu;

pub mod affine;
pub mod bench;
pub mod checkpoint;
pub mod cpu;
pub mod error;
pub mod format;
pub mod gpu;
pub mod kernel;
pub mod prelude;
pub mod qat;
pub mod quant;
pub mod requant;

pub use error::{Error, Result};
