//! Formats, in one place: the packed-code layout, the `QuantizedTensor` representation and
//! its on-disk description.

pub mod disk;
pub mod gguf;
pub mod gguf_read;
pub mod huffman;
pub mod pack;
pub mod quantized;
pub mod sparse;
pub mod weight;
pub mod window;

pub use quantized::{Encoding, Granularity, QuantizedTensor};
