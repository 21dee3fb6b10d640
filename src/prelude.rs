//! The names an engine or a script needs most, in one `use wgquant::prelude::*;`: the device
//! context and its tensors, the backend choice, the quantized representation, the method
//! configurations, and the checkpoint entry points.
//!
//! ```no_run
//! use wgquant::prelude::*;
//! let ctx = Context::new()?;
//! let cfg = UniformConfig {
//!     scheme: AffineScheme::new(4, AffineMode::Symmetric)?,
//!     granularity: Granularity::Group(128),
//!     calibration: Calibration::AbsMax,
//! };
//! let w = vec![0.5f32; 256 * 1024];
//! let qt = uniform::quantize(&Backend::Gpu(&ctx), "w", &w, &[256, 1024], &cfg)?;
//! let back = quant::dequantize(&Backend::Cpu, &qt)?;
//! # let _ = back;
//! # Ok::<(), wgquant::Error>(())
//! ```

pub use crate::affine::{AffineMode, AffineScheme};
pub use crate::checkpoint::{QuantizeOptions, dequantize_file, inspect_file, quantize_file};
pub use crate::error::{Error, Result};
pub use crate::format::{Encoding, Granularity, QuantizedTensor};
pub use crate::gpu::qweight::{GpuQWeight, QWeight};
pub use crate::gpu::{Context, ElemType, GpuTensor};
pub use crate::quant::deep_compression::DcConfig;
pub use crate::quant::discretize::DiscretizeConfig;
pub use crate::quant::uniform::{Calibration, UniformConfig};
pub use crate::quant::weq::WeqConfig;
pub use crate::quant::{self, Backend, Method, uniform};
