//! Methods as people write them: on the command line (`--scheme int4 --granularity group:128`)
//! or in a rules file. A [`MethodArgs`] holds the words; [`resolve`] turns them into a
//! [`Choice`] or a one-line reason they do not make sense.

use serde::Deserialize;

use super::Method;
use super::deep_compression::DcConfig;
use super::discretize::DiscretizeConfig;
use super::kmeans::KmeansInit;
use super::uniform::{Calibration, UniformConfig};
use crate::affine::{AffineMode, AffineScheme};
use crate::format::Granularity;
use crate::kernel::discretize::Partition;

/// A method's settings as written; unset fields fall back to defaults (see [`MethodArgs::over`]).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodArgs {
    /// `intN`, `weqN`, `linN`, `expN` (N = 1..8), `dc`, `f16`, `bf16`.
    pub scheme: Option<String>,
    /// `symmetric`, `restricted` or `asymmetric` (uniform schemes).
    pub mode: Option<String>,
    /// `tensor`, `channel` or `group:N`.
    pub granularity: Option<String>,
    /// `minmax`, `absmax`, `percentile:P` or `mse`.
    pub calib: Option<String>,
    /// dc: fraction of each tensor's weights pruned by magnitude (default 0.5).
    pub sparsity: Option<f32>,
    /// dc: bits per shared-weight code (default 5).
    pub bits: Option<u32>,
    /// dc: width of the sparse relative index (default 5).
    pub index_bits: Option<u32>,
    /// dc: k-means initialisation: `linear`, `forgy` or `density`.
    pub kmeans_init: Option<String>,
    /// dc: k-means iteration cap.
    pub kmeans_iters: Option<u32>,
}

impl MethodArgs {
    /// These settings, with every unset field taken from `defaults`.
    pub fn over(&self, defaults: &MethodArgs) -> MethodArgs {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        MethodArgs {
            scheme: pick(&self.scheme, &defaults.scheme),
            mode: pick(&self.mode, &defaults.mode),
            granularity: pick(&self.granularity, &defaults.granularity),
            calib: pick(&self.calib, &defaults.calib),
            sparsity: pick(&self.sparsity, &defaults.sparsity),
            bits: pick(&self.bits, &defaults.bits),
            index_bits: pick(&self.index_bits, &defaults.index_bits),
            kmeans_init: pick(&self.kmeans_init, &defaults.kmeans_init),
            kmeans_iters: pick(&self.kmeans_iters, &defaults.kmeans_iters),
        }
    }
}

/// A half-precision storage type for plain conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
}

/// What to do with a float tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Choice {
    /// Quantize with a method.
    Quantize(Method),
    /// Store in half precision (rounded to nearest even).
    Half(Half),
}

impl Choice {
    /// A short human label.
    pub fn label(&self) -> String {
        match self {
            Choice::Quantize(m) => m.label(),
            Choice::Half(Half::F16) => "f16".into(),
            Choice::Half(Half::Bf16) => "bf16".into(),
        }
    }
}

fn parse_mode(s: &str) -> Result<AffineMode, String> {
    match s {
        "symmetric" | "sym" => Ok(AffineMode::Symmetric),
        "restricted" => Ok(AffineMode::SymmetricRestricted),
        "asymmetric" | "asym" => Ok(AffineMode::Asymmetric),
        _ => Err(format!(
            "mode '{s}' is not symmetric, restricted or asymmetric"
        )),
    }
}

/// Bits of an `intN`-style scheme name, checked against `range`.
pub fn scheme_bits(
    scheme: &str,
    prefix: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Option<Result<u32, String>> {
    let digits = scheme.strip_prefix(prefix)?;
    Some(match digits.parse::<u32>() {
        Ok(b) if range.contains(&b) => Ok(b),
        Ok(b) => Err(format!(
            "scheme '{scheme}': bits {b} out of range {}..={}",
            range.start(),
            range.end()
        )),
        Err(_) => Err(format!("scheme '{scheme}' is not {prefix}N")),
    })
}

/// Whether any Deep Compression setting is given.
fn has_dc_options(args: &MethodArgs) -> bool {
    args.sparsity.is_some()
        || args.bits.is_some()
        || args.index_bits.is_some()
        || args.kmeans_init.is_some()
        || args.kmeans_iters.is_some()
}

/// The method `args` describe.
pub fn resolve(args: &MethodArgs) -> Result<Choice, String> {
    let scheme = args.scheme.as_deref().unwrap_or("int8");
    if scheme == "dc" {
        return resolve_dc(args).map(|c| Choice::Quantize(Method::DeepCompression(c)));
    }
    if has_dc_options(args) {
        return Err(format!(
            "'{scheme}': --sparsity, --bits, --index-bits, --kmeans-init and --kmeans-iters apply to \
             --scheme dc (other schemes take their bits from the scheme name)"
        ));
    }
    resolve_dense(scheme, args)
}

/// Deep Compression settings; the tensor is always clustered whole.
fn resolve_dc(args: &MethodArgs) -> Result<DcConfig, String> {
    if args.granularity.as_deref().is_some_and(|g| g != "tensor") {
        return Err(
            "dc clusters each tensor as a whole: use --granularity tensor or leave it out".into(),
        );
    }
    if args.calib.is_some() || args.mode.is_some() {
        return Err("dc: calib and mode apply to intN schemes".into());
    }
    let base = DcConfig::new(args.sparsity.unwrap_or(0.5), args.bits.unwrap_or(5));
    let cfg = DcConfig {
        index_bits: args.index_bits.unwrap_or(base.index_bits),
        init: match args.kmeans_init.as_deref() {
            Some(s) => s.parse::<KmeansInit>()?,
            None => base.init,
        },
        max_iter: args.kmeans_iters.unwrap_or(base.max_iter),
        ..base
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn resolve_dense(scheme: &str, args: &MethodArgs) -> Result<Choice, String> {
    match scheme {
        "f16" => return Ok(Choice::Half(Half::F16)),
        "bf16" => return Ok(Choice::Half(Half::Bf16)),
        _ => {}
    }
    if let Some(bits) = scheme_bits(scheme, "int", 1..=8) {
        let bits = bits?;
        let mode = parse_mode(args.mode.as_deref().unwrap_or("symmetric"))?;
        let scheme = AffineScheme::new(bits, mode).map_err(|e| e.to_string())?;
        let granularity: Granularity = args.granularity.as_deref().unwrap_or("channel").parse()?;
        let calibration: Calibration = match args.calib.as_deref() {
            Some(c) => c.parse()?,
            None if scheme.is_symmetric() => Calibration::AbsMax,
            None => Calibration::MinMax,
        };
        if calibration == Calibration::AbsMax && !scheme.is_symmetric() {
            return Err(
                "absmax calibration needs a symmetric mode (use minmax for asymmetric)".into(),
            );
        }
        return Ok(Choice::Quantize(Method::Uniform(UniformConfig {
            scheme,
            granularity,
            calibration,
        })));
    }
    for (prefix, partition) in [("lin", Partition::Linear), ("exp", Partition::Exponential)] {
        if let Some(bits) = scheme_bits(scheme, prefix, 2..=8) {
            let bits = bits?;
            if args.calib.is_some() || args.mode.is_some() {
                return Err(format!("'{scheme}': calib and mode apply to intN schemes"));
            }
            let granularity: Granularity =
                args.granularity.as_deref().unwrap_or("channel").parse()?;
            let cfg = DiscretizeConfig::new(partition, bits, granularity);
            return Ok(Choice::Quantize(Method::Discretize(cfg)));
        }
    }
    if let Some(bits) = scheme_bits(scheme, "weq", 1..=8) {
        let bits = bits?;
        if args.calib.is_some() || args.mode.is_some() {
            return Err(format!(
                "'{scheme}': --calib and --mode apply to intN schemes; weqN chooses its own levels"
            ));
        }
        let granularity: Granularity = args.granularity.as_deref().unwrap_or("channel").parse()?;
        return Ok(Choice::Quantize(Method::Weq(super::weq::WeqConfig {
            bits,
            granularity,
        })));
    }
    Err(format!(
        "unknown scheme '{scheme}' (intN, weqN, linN, expN, dc, f16, bf16)"
    ))
}
