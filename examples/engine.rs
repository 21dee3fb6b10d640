//! wgquant inside a host engine that already owns a wgpu device.
//!
//! The engine creates its device, queue and a weight buffer of its own; wgquant adopts the
//! device (`Context::from_device`), wraps the buffer without copying (`GpuTensor::wrap`),
//! and records int4 group-128 quantization of W and the dequantizing product y = x·Wᵀ into
//! the engine's command encoder. The engine submits once. The result is then checked
//! against the f32 product and against the CPU twin (quantize, dequantize, multiply).
//!
//! `cargo run --release --example engine [-- ROWS COLS]` (default 768 × 3072).

use wgquant::affine::{AffineMode, AffineScheme};
use wgquant::format::Granularity;
use wgquant::format::weight::WeightLayout;
use wgquant::gpu::qmatmul::{self, Options};
use wgquant::gpu::qweight::{GpuDecoding, QWeight};
use wgquant::gpu::{Context, ElemType, GpuTensor};
use wgquant::quant::uniform::{self, Calibration, UniformConfig};
use wgquant::quant::{self, Backend};
use wgquant::wgpu;

/// What an application that already renders or infers with wgpu has: its device and queue.
fn engine_device() -> Result<(wgpu::Device, wgpu::Queue), String> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let adapter = pollster::block_on(instance.enumerate_adapters(backends))
        .into_iter()
        .next()
        .ok_or("wgpu found no adapter (install mesa-vulkan-drivers for lavapipe)")?;
    let desc = wgpu::DeviceDescriptor {
        label: Some("engine"),
        // The adapter's own buffer limits, so large weights fit one binding.
        required_limits: adapter.limits(),
        ..wgpu::DeviceDescriptor::default()
    };
    pollster::block_on(adapter.request_device(&desc)).map_err(|e| e.to_string())
}

/// Deterministic heavy-tailed weights and activations.
fn values(n: usize, salt: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            let u = h as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            u * u * u * 0.05
        })
        .collect()
}

/// y = x·Wᵀ in f64 on the host.
fn reference(x: &[f32], w: &[f32], cols: usize) -> Vec<f64> {
    w.chunks(cols)
        .map(|row| {
            row.iter()
                .zip(x)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        })
        .collect()
}

/// ‖a − b‖² / ‖b‖².
fn nmse(a: &[f32], b: &[f64]) -> f64 {
    let noise: f64 = a
        .iter()
        .zip(b)
        .map(|(p, q)| (f64::from(*p) - q).powi(2))
        .sum();
    noise / b.iter().map(|q| q * q).sum::<f64>().max(f64::MIN_POSITIVE)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (rows, cols) = (*args.first().unwrap_or(&768), *args.get(1).unwrap_or(&3072));
    if cols % 128 != 0 {
        return Err(format!("COLS {cols} must be a multiple of the group size 128").into());
    }
    let (device, queue) = engine_device()?;
    let w_host = values(rows * cols, 1);
    let x_host = values(cols, 2);

    // The engine's own buffer: 256 bytes of its other data, then W.
    let offset = 256u64;
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("engine weights"),
        size: offset + (rows * cols * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, offset, bytemuck::cast_slice(&w_host));

    let ctx = Context::from_device(device.clone(), queue.clone());
    println!("adopted device: {}", ctx.adapter_summary());
    let w = GpuTensor::wrap(buffer, offset, &[rows, cols], ElemType::F32)?;
    let x = GpuTensor::from_f32(&ctx, &x_host, &[1, cols])?;
    let y = GpuTensor::zeros(&ctx, &[1, rows], ElemType::F32)?;
    let scheme = AffineScheme::new(4, AffineMode::Symmetric)?;
    let cfg = UniformConfig {
        scheme,
        granularity: Granularity::Group(128),
        calibration: Calibration::AbsMax,
    };

    // Everything recorded into the engine's encoder, one submit.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("engine frame"),
    });
    let (codes, params) = uniform::encode_quantize(&ctx, &mut encoder, &w, &cfg)?;
    let weight = QWeight {
        layout: WeightLayout {
            rows,
            cols,
            bits: scheme.bits,
            granularity: cfg.granularity,
        },
        codes: &codes,
        decoding: GpuDecoding::Affine {
            scale: &params.scale,
            zero: None,
            qmin: scheme.qmin(),
        },
    };
    qmatmul::encode(
        &ctx,
        &mut encoder,
        &x,
        &weight,
        None,
        &y,
        &Options::default(),
    )?;
    queue.submit([encoder.finish()]);
    let y_gpu = y.to_f32(&ctx)?;

    // The CPU twin: quantize, dequantize, multiply in f64.
    let qt = uniform::quantize(&Backend::Cpu, "W", &w_host, &[rows, cols], &cfg)?;
    let w_cpu = quant::dequantize(&Backend::Cpu, &qt)?;
    let y_twin = reference(&x_host, &w_cpu, cols);
    let y_f32 = reference(&x_host, &w_host, cols);
    let codes_equal = codes.to_u32(&ctx)? == qt.codes;

    println!(
        "W [{rows}, {cols}]: {} bytes f32 -> {} bytes of int4 codes + {} scales",
        rows * cols * 4,
        qt.codes.len() * 4,
        params.scale.numel()
    );
    println!("GPU codes equal to the CPU twin's: {codes_equal}");
    println!(
        "NMSE of y against the CPU twin's product: {:.3e}",
        nmse(&y_gpu, &y_twin)
    );
    println!(
        "NMSE of y against the f32 product (int4 error): {:.3e}",
        nmse(&y_gpu, &y_f32)
    );
    if !codes_equal || nmse(&y_gpu, &y_twin) > 5e-4 {
        return Err("the GPU result differs from the CPU twin".into());
    }
    Ok(())
}
