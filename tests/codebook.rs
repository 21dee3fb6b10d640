//! The codebook kernels (codebook_assign, codebook_dequantize) on GPU against their CPU
//! twins, and the nearest-level property of midpoint thresholds.

mod common;

use common::{Check, Dist, Guarded, as_f32, finish, generate, gpu, rng, seed_for};
use rand::RngExt;
use wgquant::affine::AffineSegment;
use wgquant::cpu;
use wgquant::format::pack;
use wgquant::gpu::{ElemType, GpuTensor, WorkLimits};
use wgquant::quant::codebook::{midpoint_thresholds, segment};

/// Sorted random levels, `2^bits` per group, spread like the data (some may repeat).
fn random_levels(groups: usize, bits: u32, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let per = 1usize << bits;
    let mut out = Vec::with_capacity(groups * per);
    for _ in 0..groups {
        let mut g: Vec<f32> = (0..per).map(|_| r.random_range(-3.0f32..3.0)).collect();
        if per > 2 && r.random_bool(0.3) {
            // A repeated level, as padded codebooks have.
            g[per - 1] = g[per - 2];
        }
        g.sort_by(f32::total_cmp);
        out.extend(g);
    }
    out
}

fn run_case(
    ctx: &wgquant::gpu::Context,
    label: &str,
    x: &[f32],
    seg: &AffineSegment,
    levels: &[f32],
) -> Check {
    let thresholds = midpoint_thresholds(levels, seg.bits);
    let words = seg.packed_words();
    let mut cpu_codes = vec![0u32; words];
    cpu::codebook_assign::codebook_assign(x, &mut cpu_codes, &thresholds, &[*seg])
        .map_err(|e| format!("{label}: cpu assign: {e}"))?;
    let gpu_err = |e: wgquant::Error| format!("{label}: gpu: {e}");
    let input = GpuTensor::from_f32(ctx, x, &[x.len()]).map_err(gpu_err)?;
    let table = GpuTensor::from_f32(ctx, &thresholds, &[thresholds.len()]).map_err(gpu_err)?;
    let codes = Guarded::new(ctx, 5, words, ElemType::U32).map_err(gpu_err)?;
    wgquant::gpu::codebook_assign::codebook_assign(ctx, &input, &codes.view, &table, &[*seg])
        .map_err(gpu_err)?;
    let gpu_codes = codes.check(ctx, label, &[0..words], Some(&cpu_codes))?;
    // Assignment only compares, so the backends agree exactly.
    if gpu_codes != cpu_codes {
        let i = gpu_codes
            .iter()
            .zip(&cpu_codes)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "{label}: code word {i}: gpu {:#x} cpu {:#x}",
            gpu_codes[i], cpu_codes[i]
        ));
    }
    // Nearest level: no other level of the group is strictly closer.
    let per = 1usize << seg.bits;
    for (i, &v) in x.iter().enumerate() {
        let g = seg.group_of(i);
        let table = &levels[g * per..][..per];
        let c = pack::get_code(&cpu_codes, i, seg.bits) as usize;
        let d = (v - table[c]).abs();
        if let Some(best) = table.iter().map(|l| (v - l).abs()).reduce(f32::min) {
            // Midpoints are rounded to f32, so a value within an ULP of one may go either way.
            if d > best + 2.0 * f32::EPSILON * v.abs().max(1.0) {
                return Err(format!(
                    "{label}: element {i} = {v} got level {} at {d}, nearest is {best}",
                    table[c]
                ));
            }
        }
    }
    let mut cpu_out = vec![0f32; x.len()];
    cpu::codebook_dequantize::codebook_dequantize(&cpu_codes, &mut cpu_out, levels, &[*seg])
        .map_err(|e| format!("{label}: cpu dequantize: {e}"))?;
    let table = GpuTensor::from_f32(ctx, levels, &[levels.len()]).map_err(gpu_err)?;
    let out = Guarded::new(ctx, 3, x.len(), ElemType::F32).map_err(gpu_err)?;
    wgquant::gpu::codebook_dequantize::codebook_dequantize(
        ctx,
        &codes.view,
        &out.view,
        &table,
        &[*seg],
    )
    .map_err(gpu_err)?;
    let expected: Vec<u32> = cpu_out.iter().map(|v| v.to_bits()).collect();
    let got = as_f32(&out.check(ctx, label, &[0..x.len()], Some(&expected))?);
    // A table lookup: bit-identical.
    if let Some(i) = got
        .iter()
        .zip(&cpu_out)
        .position(|(a, b)| a.to_bits() != b.to_bits())
    {
        return Err(format!(
            "{label}: decoded element {i}: gpu {} cpu {}",
            got[i], cpu_out[i]
        ));
    }
    Ok(())
}

#[test]
fn codebook_kernels_match_cpu() {
    let Some(base) = gpu() else { return };
    let small = base.with_work_limits(WorkLimits {
        max_binding_bytes: 4096 + 52,
        max_workgroups_per_dim: 7,
    });
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, group_len) in [
        (1usize, 1usize),
        (255, 255),
        (257, 257),
        (1757, 251),
        (4096, 32),
        ((1 << 20) + 3, (1 << 20) + 3),
        (12 * 999, 999),
    ] {
        for bits in [1u32, 2, 3, 4, 5, 8] {
            for (ctx, limits) in [(base, "device"), (&small, "small-windows")] {
                if limits == "small-windows" && n < 4096 {
                    continue;
                }
                if bits == 8 && group_len < 256 {
                    continue;
                }
                let label =
                    format!("codebook(n={n}, group={group_len}, bits={bits}, limits={limits})");
                let seed = seed_for(&label);
                let x = generate(Dist::Laplace, n, seed);
                let levels = random_levels(n / group_len, bits, seed ^ 1);
                let seg = segment(n, group_len, bits);
                cases += 1;
                if let Err(e) = run_case(ctx, &format!("{label} seed={seed:#x}"), &x, &seg, &levels)
                {
                    failures.push(e);
                }
            }
        }
    }
    finish("codebook_kernels_match_cpu", cases, failures);
}

#[test]
fn mixed_bit_widths_are_refused() {
    let Some(ctx) = gpu() else { return };
    let a = segment(64, 64, 2);
    let mut b = segment(64, 64, 3);
    b.src = 64;
    b.dst = 8;
    b.param = 1;
    let x = GpuTensor::from_f32(ctx, &[0.5; 128], &[128]).unwrap();
    let t = GpuTensor::from_f32(ctx, &[0.0; 16], &[16]).unwrap();
    let codes = GpuTensor::zeros(ctx, &[32], ElemType::U32).unwrap();
    assert!(wgquant::gpu::codebook_assign::codebook_assign(ctx, &x, &codes, &t, &[a, b]).is_err());
    let mut out = vec![0u32; 32];
    assert!(
        cpu::codebook_assign::codebook_assign(&[0.5; 128], &mut out, &[0.0; 16], &[a, b]).is_err()
    );
}
