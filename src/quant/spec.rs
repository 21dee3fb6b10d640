//! Methods as people write them: on the command line (`--scheme int4 --granularity group:128`)
//! or in a rules file. A [`MethodArgs`] holds the words; [`resolve`] turns them into a
//! [`Choice`] or a one-line reason they do not make sense.

use serde::Deserialize;

use super::Method;
use super::uniform::{Calibration, UniformConfig};
use crate::affine::{AffineMode, AffineScheme};
use crate::format::Granularity;

/// A method's settings as written; unset fields fall back to defaults (see [`MethodArgs::over`]).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodArgs {
    /// `intN` or `weqN` (N = 1..8), `f16`, `bf16`.
    pub scheme: Option<String>,
    /// `symmetric`, `restricted` or `asymmetric` (uniform schemes).
    pub mode: Option<String>,
    /// `tensor`, `channel` or `group:N`.
    pub granularity: Option<String>,
    /// `minmax`, `absmax`, `percentile:P` or `mse`.
    pub calib: Option<String>,
}

impl MethodArgs {
    /// These settings, with every unset field taken from `defaults`.
    pub fn over(&self, defaults: &MethodArgs) -> MethodArgs {
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        MethodArgs {
            scheme: pick(&self.scheme, &defaults.scheme),
            mode: pick(&self.mode, &defaults.mode),
            granularity: pick(&self.granularity, &defaults.granularity),
            calib: pick(&self.calib, &defaults.calib),
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

/// The method `args` describe.
pub fn resolve(args: &MethodArgs) -> Result<Choice, String> {
    let scheme = args.scheme.as_deref().unwrap_or("int8");
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
    if let Some(bits) = scheme_bits(scheme, "weq", 1..=8) {
        let bits = bits?;
        if args.calib.is_some() || args.mode.as_deref().is_some_and(|m| m != "symmetric") {
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
        "unknown scheme '{scheme}' (intN or weqN with N = 1..8, f16, bf16)"
    ))
}
