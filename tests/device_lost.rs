//! A lost device surfaces as an error naming what happened, never a panic.

mod common;

use wgquant::affine::{AffineMode, AffineScheme};
use wgquant::format::Granularity;
use wgquant::gpu::Context;
use wgquant::quant::Backend;
use wgquant::quant::uniform::{Calibration, UniformConfig, quantize};

#[test]
fn work_on_a_destroyed_device_is_an_error() {
    // The shared device must stay usable for other tests: this one makes its own.
    if common::gpu().is_none() {
        return;
    }
    let ctx = Context::new().expect("an adapter exists (checked above)");
    let cfg = UniformConfig {
        scheme: AffineScheme::new(4, AffineMode::Symmetric).unwrap(),
        granularity: Granularity::Channel,
        calibration: Calibration::AbsMax,
    };
    let x: Vec<f32> = (0..4096).map(|i| (i as f32).sin()).collect();
    assert!(quantize(&Backend::Gpu(&ctx), "w", &x, &[64, 64], &cfg).is_ok());
    ctx.device().destroy();
    let err = quantize(&Backend::Gpu(&ctx), "w", &x, &[64, 64], &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("device was lost"), "{err}");
}
