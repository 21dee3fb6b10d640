//! A host engine's device adopted with `Context::from_device`: the test creates its own
//! instance, adapter, device, queue and buffer, wraps two tensors inside that buffer (one at a
//! 256-byte-aligned offset, one only 4-byte aligned) with `GpuTensor::wrap`, records
//! in-place fake quantization into its own command encoder, submits and reads back itself.
//! The tensors must equal the CPU twin and every other byte of the buffer must be untouched.

mod common;

use common::*;
use wgquant::affine::{AffineMode, AffineScheme};
use wgquant::gpu::{Context, ElemType, GpuTensor};

/// The host engine's device: what an application that already uses wgpu would have.
fn host_device() -> Option<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo)> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let Some(adapter) = adapters.into_iter().next() else {
        if ci() {
            panic!("CI is set and wgpu found no adapter for backends {backends:?}");
        }
        say("SKIPPED: no GPU adapter (adopt_device); set CI=1 to make this a failure");
        return None;
    };
    let info = adapter.get_info();
    let desc = wgpu::DeviceDescriptor {
        label: Some("host engine"),
        required_limits: wgpu::Limits::default(),
        ..wgpu::DeviceDescriptor::default()
    };
    match pollster::block_on(adapter.request_device(&desc)) {
        Ok((device, queue)) => Some((device, queue, info)),
        Err(e) => {
            // An adapter that exists but cannot give a default device is a failure, not a skip.
            panic!(
                "request_device on {}: {e}",
                wgquant::gpu::describe_adapter(&info)
            )
        }
    }
}

/// Reads `buffer` back through a staging buffer of the test's own.
fn read_back(device: &wgpu::Device, queue: &wgpu::Queue, buffer: &wgpu::Buffer) -> Vec<u8> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    rx.recv().expect("map callback").expect("map");
    let bytes = staging.get_mapped_range(..).expect("mapped range").to_vec();
    staging.unmap();
    bytes
}

#[test]
fn fake_quant_in_place_inside_a_host_buffer_and_encoder() {
    let Some((device, queue, info)) = host_device() else {
        return;
    };
    say(&format!(
        "adopt_device: host device on {}",
        wgquant::gpu::describe_adapter(&info)
    ));

    // Two tensors inside one host buffer full of unrelated data: A (per-channel, 3 rows of
    // 101) at byte 512, B (per-group of 32 with a short last group, 257 elements) at a
    // 4-byte-aligned offset that is not 256-byte aligned.
    let (a_off, a_rows, a_cols) = (512u64, 3usize, 101usize);
    let a_len = a_rows * a_cols;
    let b_off = a_off + a_len as u64 * 4 + 4 * 9;
    assert!(b_off.is_multiple_of(4) && !b_off.is_multiple_of(256));
    let b_len = 257usize;
    let size = (b_off + b_len as u64 * 4 + 300).next_multiple_of(4);
    let unrelated: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let seed = seed_for("adopt_device");
    let xa = generate(Dist::Laplace, a_len, seed);
    let xb = generate(Dist::Outliers, b_len, seed ^ 1);
    let mut initial = unrelated.clone();
    initial[a_off as usize..][..a_len * 4].copy_from_slice(bytemuck::cast_slice(&xa));
    initial[b_off as usize..][..b_len * 4].copy_from_slice(bytemuck::cast_slice(&xb));
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host buffer"),
        size,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, &initial);

    let ctx = Context::from_device(device.clone(), queue.clone());
    let scheme_a = AffineScheme::new(4, AffineMode::Asymmetric).unwrap();
    let scheme_b = AffineScheme::new(3, AffineMode::Symmetric).unwrap();
    let (sa, za) = group_params(&xa, a_cols, scheme_a);
    let (sb, zb) = group_params(&xb, 32, scheme_b);
    let seg_a = whole_segment(a_len, a_cols, scheme_a);
    let seg_b = whole_segment(b_len, 32, scheme_b);
    let label = format!(
        "fake_quant_inplace(host buffer, A: {a_rows}x{a_cols} per-channel 4-bit asym at byte {a_off}, \
         B: {b_len} per-group(32) 3-bit sym at byte {b_off}, seed={seed:#x})"
    );

    let run = || -> wgquant::Result<()> {
        let ta = GpuTensor::wrap(buffer.clone(), a_off, &[a_rows, a_cols], ElemType::F32)?;
        let tb = GpuTensor::wrap(buffer.clone(), b_off, &[b_len], ElemType::F32)?;
        let (gsa, gza) = (
            GpuTensor::from_f32(&ctx, &sa, &[sa.len()])?,
            GpuTensor::from_i32(&ctx, &za, &[za.len()])?,
        );
        let (gsb, gzb) = (
            GpuTensor::from_f32(&ctx, &sb, &[sb.len()])?,
            GpuTensor::from_i32(&ctx, &zb, &[zb.len()])?,
        );
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("host encoder"),
        });
        wgquant::gpu::fake_quant::encode(&ctx, &mut enc, &ta, &ta, &gsa, &gza, &[seg_a])?;
        wgquant::gpu::fake_quant::encode(&ctx, &mut enc, &tb, &tb, &gsb, &gzb, &[seg_b])?;
        queue.submit([enc.finish()]);
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{label}: {e}");
    }
    let after = read_back(&device, &queue, &buffer);

    let mut failures = Vec::new();
    // Bytes outside both tensors are untouched.
    let in_a = a_off as usize..a_off as usize + a_len * 4;
    let in_b = b_off as usize..b_off as usize + b_len * 4;
    if let Some(k) = (0..size as usize)
        .find(|k| !in_a.contains(k) && !in_b.contains(k) && after[*k] != unrelated[*k])
    {
        failures.push(format!(
            "{label}: byte {k} outside the tensors changed: {:#04x} -> {:#04x}",
            unrelated[k], after[k]
        ));
    }
    // Each tensor equals the CPU twin run in place on the same data.
    for (name, x, off, s, z, seg, dist) in [
        ("A", &xa, a_off, &sa, &za, seg_a, Dist::Laplace),
        ("B", &xb, b_off, &sb, &zb, seg_b, Dist::Outliers),
    ] {
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&after[off as usize..][..x.len() * 4]);
        let mut expected = x.clone();
        if let Err(e) = wgquant::cpu::fake_quant::fake_quant_inplace(&mut expected, s, z, &[seg]) {
            failures.push(format!("{label} {name}: CPU: {e}"));
            continue;
        }
        let q = Quantizer {
            seg,
            scale: s,
            zero: z,
        };
        let l = format!("{label} tensor {name}");
        failures.extend(check_fake_quant_codes(&l, &q, x, &expected, &got).err());
        failures.extend(check_quantizer_levels(&l, &q, x, &got, dist).err());
    }
    finish(
        "fake_quant_in_place_inside_a_host_buffer_and_encoder",
        2,
        failures,
    );
}
