//! Weighted-entropy quantization of weights: the GPU's histogram form against the exact CPU
//! algorithm (S within 0.1%), the histogram bit for bit against its CPU twin and across runs,
//! levels and thresholds well formed, S by hand on a tiny example, tensors larger than one
//! binding, the single command stream against the round-based driver, and the file round
//! trip. Sized to run in seconds on a software adapter: every distribution and width on cheap
//! shapes, the expensive large-group sweeps once or twice each.

mod common;

use common::{Check, Dist, check_written, finish, generate, gpu, poisoned, seed_for};
use wgquant::affine::GroupRange;
use wgquant::cpu;
use wgquant::format::{Encoding, Granularity, QuantizedTensor};
use wgquant::gpu::{Context, ElemType, GpuTensor, WorkLimits, minmax, weq_histogram};
use wgquant::kernel::weq::WeqInfo;
use wgquant::quant::weq::{self, WeqConfig};
use wgquant::quant::{self, Backend};

/// The GPU's S (evaluated exactly on the data) may fall short of the exact algorithm's by at
/// most this fraction: ALGORITHMS.md §3's target. Boundaries on 2^16 bins (2·n bins for
/// small groups) cost about 10⁻⁶ on the tensors here.
const S_REL_TOL: f64 = 1e-3;

/// Groups below this many elements get [`S_REL_TOL_SMALL`]: the design point of the
/// histogram (2^16 bins, ≥ 16 bins per element) is large groups; in small ones a bin holds
/// several of the few values near 0 and boundaries cannot fall between them.
const SMALL_GROUP: usize = 1 << 14;

/// S shortfall allowed for small groups: measured up to 2.3% at 8 bits (128 clusters over
/// 1,757 values) and 0.5% at 4–5 bits on 384-element rows; 3% leaves margin and still
/// catches a broken sweep (which loses tens of percent).
const S_REL_TOL_SMALL: f64 = 3e-2;

/// Levels and thresholds of a codebook tensor.
fn tables(qt: &QuantizedTensor) -> (&[f32], &[f32]) {
    match &qt.encoding {
        Encoding::Codebook {
            levels,
            thresholds: Some(t),
        } => (levels, t),
        _ => panic!("WEQ gives a codebook with thresholds"),
    }
}

/// Levels strictly increasing and sign-symmetric (all 0 for an all-zero group, which must
/// decode to zeros), thresholds sorted with 0 in the middle.
fn check_tables(label: &str, qt: &QuantizedTensor) -> Check {
    let (levels, thresholds) = tables(qt);
    let per = 1usize << qt.bits;
    let h = per / 2;
    for (g, (l, t)) in levels.chunks(per).zip(thresholds.chunks(per)).enumerate() {
        if l.iter().all(|&v| v == 0.0) {
            continue;
        }
        if let Some(i) = (1..per).find(|&i| !(l[i] > l[i - 1])) {
            return Err(format!(
                "{label}: group {g}: levels not strictly increasing at {i}: {l:?}"
            ));
        }
        if let Some(n) = (0..h).find(|&n| l[h - 1 - n] != -l[h + n]) {
            return Err(format!(
                "{label}: group {g}: level ±{n} not symmetric: {l:?}"
            ));
        }
        if (1..per - 1).any(|i| t[i] < t[i - 1]) || t[h - 1] != 0.0 {
            return Err(format!(
                "{label}: group {g}: thresholds not sorted around 0: {t:?}"
            ));
        }
    }
    Ok(())
}

/// One case: GPU and exact CPU on the same data; S, tables and codes checked.
fn run_case(ctx: &Context, label: &str, x: &[f32], shape: &[usize], cfg: &WeqConfig) -> Check {
    let e = |e: wgquant::Error| format!("{label}: {e}");
    let g = weq::solve(&Backend::Gpu(ctx), "x", x, shape, cfg).map_err(e)?;
    let c = weq::solve_exact("x", x, shape, cfg).map_err(e)?;
    // The CPU backend runs the GPU's algorithm on its twins: S within the same bound of the
    // exact one (their logs differ by ULPs, so near-equal candidates may be chosen apart).
    let twin = weq::solve(&Backend::Cpu, "x", x, shape, cfg).map_err(e)?;
    check_tables(&format!("{label} cpu twin"), &twin.tensor)?;
    check_tables(&format!("{label} gpu"), &g.tensor)?;
    check_tables(&format!("{label} cpu"), &c.tensor)?;
    let group_len = cfg.granularity.group_len(shape).map_err(e)?;
    let s_gpu = cpu::weq_exact::partition_entropy(x, group_len, cfg.bits, tables(&g.tensor).1);
    let s_twin = cpu::weq_exact::partition_entropy(x, group_len, cfg.bits, tables(&twin.tensor).1);
    let s_cpu = cpu::weq_exact::partition_entropy(x, group_len, cfg.bits, tables(&c.tensor).1);
    for (k, ((sg, sc), exact)) in s_gpu.iter().zip(&s_cpu).zip(&c.entropy).enumerate() {
        // The exact algorithm's own S equals the S of the partition its thresholds apply.
        if (sc - exact).abs() > 1e-9 * exact.abs().max(1e-30) {
            return Err(format!(
                "{label}: group {k}: exact S {exact} but its thresholds give {sc}"
            ));
        }
        let tol = if group_len < SMALL_GROUP {
            S_REL_TOL_SMALL
        } else {
            S_REL_TOL
        };
        for (who, got) in [("GPU", *sg), ("CPU twin", s_twin[k])] {
            if got < exact * (1.0 - tol) {
                return Err(format!(
                    "{label}: group {k}: {who} S {got} below exact {exact} by more than {tol} \
                     (S_REL_TOL, or S_REL_TOL_SMALL under {SMALL_GROUP} elements)"
                ));
            }
        }
        // The histogram's own S (f32) agrees with the exact value of its partition.
        let reported = g.entropy[k];
        if (reported - sg).abs() > 1e-4 * sg.abs().max(1e-30) {
            return Err(format!(
                "{label}: group {k}: GPU reports S {reported}, its partition has {sg}"
            ));
        }
    }
    // Codes are the thresholds counted: the CPU assigns the GPU's thresholds to the same codes.
    let codes = quant::codebook::assign(
        &Backend::Cpu,
        x,
        shape,
        cfg.granularity,
        cfg.bits,
        tables(&g.tensor).1,
    )
    .map_err(e)?;
    if codes != g.tensor.codes {
        return Err(format!(
            "{label}: GPU codes differ from its thresholds counted on the CPU"
        ));
    }
    // Decoding gives each element its cluster's level, with its sign (or + for 0).
    let xhat = quant::dequantize(&Backend::Gpu(ctx), &g.tensor).map_err(e)?;
    if let Some(i) = x
        .iter()
        .zip(&xhat)
        .position(|(a, b)| *a != 0.0 && a.signum() != b.signum())
    {
        return Err(format!(
            "{label}: element {i} = {} decoded to {}",
            x[i], xhat[i]
        ));
    }
    Ok(())
}

/// Values rounded to quarters: long runs of exact ties.
fn ties(n: usize, seed: u64) -> Vec<f32> {
    generate(Dist::Normal, n, seed)
        .iter()
        .map(|v| (v * 4.0).round() / 4.0)
        .collect()
}

/// Distributions of the tests, by name.
const DISTS: [&str; 5] = ["normal", "laplace", "outliers", "constant", "ties"];

fn data(dist: &str, n: usize, seed: u64) -> Vec<f32> {
    match dist {
        "normal" => generate(Dist::Normal, n, seed),
        "laplace" => generate(Dist::Laplace, n, seed),
        "outliers" => generate(Dist::Outliers, n, seed),
        "constant" => generate(Dist::Constant, n, seed),
        _ => ties(n, seed),
    }
}

/// The cases of [`gpu_entropy_within_exact`]: every distribution at every width on the cheap
/// shapes, and one or two distributions per width on the expensive ones (the sweeps of large
/// groups at 5 and 8 bits cost about a second each on a software adapter).
fn entropy_cases() -> Vec<(Vec<usize>, Granularity, u32, &'static [&'static str])> {
    use Granularity::{Channel, Tensor};
    const ALL: &[&str] = &DISTS;
    vec![
        // Fewer values than clusters, single values, constant tensors.
        (vec![1], Tensor, 2, ALL),
        (vec![1], Tensor, 8, ALL),
        (vec![3], Tensor, 3, ALL),
        (vec![3], Tensor, 8, ALL),
        // Small groups (S_REL_TOL_SMALL), every width.
        (vec![1757], Tensor, 2, ALL),
        (vec![1757], Tensor, 3, ALL),
        (vec![1757], Tensor, 4, ALL),
        (vec![1757], Tensor, 5, &["normal", "ties"]),
        (vec![1757], Tensor, 8, &["laplace", "constant"]),
        // Large groups (S_REL_TOL = 0.1%, the design point: 2^16 bins).
        (vec![(1 << 16) + 3], Tensor, 2, &["ties", "constant"]),
        (vec![(1 << 16) + 3], Tensor, 3, &["normal", "outliers"]),
        (vec![(1 << 16) + 3], Tensor, 4, &["laplace", "normal"]),
        (vec![(1 << 16) + 3], Tensor, 5, &["outliers"]),
        // Per channel: a workgroup per group (4096 bins) ...
        (vec![6, 1000], Channel, 3, &["normal", "ties"]),
        (vec![6, 1000], Channel, 4, &["laplace"]),
        // ... and one thread per group (2048 and 256 bins), many groups to a workgroup.
        (vec![24, 384], Channel, 2, ALL),
        (vec![24, 384], Channel, 3, ALL),
        (vec![24, 384], Channel, 4, &["laplace", "ties"]),
        (vec![24, 384], Channel, 5, &["laplace"]),
        // (At more clusters per value, small groups' local optima spread wider than
        // S_REL_TOL_SMALL; twin_sweep_matches_gpu checks this kernel at 4 bits instead.)
        (vec![200, 64], Channel, 3, &["laplace", "ties", "constant"]),
    ]
}

#[test]
fn gpu_entropy_within_exact() {
    let Some(ctx) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    for (shape, granularity, bits, dists) in entropy_cases() {
        let n: usize = shape.iter().product();
        for &dist in dists {
            let label = format!(
                "weq(shape={shape:?}, {}, bits={bits}, {dist})",
                granularity.label()
            );
            let seed = seed_for(&label);
            let x = data(dist, n, seed);
            let cfg = WeqConfig { bits, granularity };
            cases += 1;
            if let Err(e) = run_case(ctx, &format!("{label} seed={seed:#x}"), &x, &shape, &cfg) {
                failures.push(e);
            }
        }
    }
    finish("gpu_entropy_within_exact", cases, failures);
}

/// The single command stream ([`weq::encode`], every pass up to the cap) and the round-based
/// driver ([`weq::run`], stopping at convergence) give the same bits: passes after a group
/// converged change nothing.
#[test]
fn single_stream_equals_rounds() {
    let Some(ctx) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, group_len, bits) in [(48 * 300, 300usize, 3u32), (1757, 1757, 5)] {
        let label = format!("weq::encode vs run(n={n}, group={group_len}, bits={bits})");
        let x = generate(Dist::Laplace, n, seed_for(&label));
        let e = |e: wgquant::Error| format!("{label}: {e}");
        let outs = (|| -> wgquant::Result<_> {
            let input = GpuTensor::from_f32(ctx, &x, &[n])?;
            let a = weq::WeqBuffers::new(ctx, n, group_len, bits)?;
            let b = weq::WeqBuffers::new(ctx, n, group_len, bits)?;
            ctx.run("weq", |enc| {
                weq::encode(ctx, enc, &input, group_len, bits, &a)
            })?;
            weq::run(ctx, &input, group_len, bits, &b)?;
            let words = |o: &weq::WeqBuffers| -> wgquant::Result<Vec<Vec<u32>>> {
                Ok(vec![
                    o.codes.download(ctx)?,
                    o.levels.download(ctx)?,
                    o.thresholds.download(ctx)?,
                    o.info.download(ctx)?,
                ])
            };
            Ok((words(&a)?, words(&b)?))
        })();
        cases += 1;
        match outs.map_err(e) {
            Ok((a, b)) if a != b => failures.push(format!("{label}: outputs differ")),
            Err(m) => failures.push(m),
            _ => {}
        }
    }
    finish("single_stream_equals_rounds", cases, failures);
}

#[test]
fn entropy_by_hand() {
    // |w| = 1,1,2,2,3,3 (Σw² = 2, 8, 18). Two clusters: the best cut puts {1,1,2,2} below
    // {3,3}: S = (10·ln(12/4) + 18·ln(12/2)) / 6, r = (sqrt(10/4), 3), boundary 3.
    let x = [1.0f32, -1.0, 2.0, -2.0, 3.0, 3.0];
    let s = (10.0 * 3f64.ln() + 18.0 * 6f64.ln()) / 6.0;
    let r0 = (2.5f64).sqrt() as f32;
    let cfg = WeqConfig {
        bits: 2,
        granularity: Granularity::Tensor,
    };
    let mut backends = vec![Backend::Cpu];
    if let Some(ctx) = gpu() {
        backends.push(Backend::Gpu(ctx));
    }
    for b in backends {
        let out = weq::solve(&b, "x", &x, &[6], &cfg).unwrap();
        let (levels, thresholds) = tables(&out.tensor);
        // The histogram sweep keeps S in f32.
        let tol = 1e-6;
        assert!(
            (out.entropy[0] - s).abs() < tol * s,
            "{}: S {} != {s}",
            b.name(),
            out.entropy[0]
        );
        let l0 = levels[2];
        assert!(
            (l0 - r0).abs() <= 2.0 * f32::EPSILON * r0,
            "{}: {levels:?}",
            b.name()
        );
        assert_eq!(levels[3], 3.0, "{}: {levels:?}", b.name());
        assert_eq!(levels[0], -3.0, "{}: {levels:?}", b.name());
        assert_eq!(thresholds[2], 3.0, "{}: {thresholds:?}", b.name());
        let xhat = quant::dequantize(&b, &out.tensor).unwrap();
        assert_eq!(xhat, vec![r0, -r0, r0, -r0, 3.0, 3.0], "{}", b.name());
    }
}

/// CPU ranges of every group, as minmax computes them.
fn ranges_of(x: &[f32], group_len: usize) -> Vec<GroupRange> {
    x.chunks(group_len)
        .map(|g| GroupRange {
            lo: g.iter().copied().fold(f32::INFINITY, f32::min),
            hi: g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            nonfinite: 0,
            _pad: 0,
        })
        .collect()
}

#[test]
fn histogram_bit_identical() {
    let Some(base) = gpu() else { return };
    // 1 MiB bindings: the 4 MiB input is read in chunks, a 2^16-bin histogram still fits.
    let small = base.with_work_limits(WorkLimits {
        max_binding_bytes: (1 << 20) + 4096,
        max_workgroups_per_dim: 37,
    });
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, group_len, limits) in [
        ((1usize << 20) + 3, (1usize << 20) + 3, "small-windows"),
        (1757, 1757, "device"),
        (96 * 333, 333, "device"),
    ] {
        for dist in [Dist::Laplace, Dist::Outliers, Dist::Constant] {
            let ctx = if limits == "device" { base } else { &small };
            let label = format!(
                "weq_histogram(n={n}, group={group_len}, {}, {limits})",
                dist.name()
            );
            let x = generate(dist, n, seed_for(&label));
            let ranges = ranges_of(&x, group_len);
            let bins = weq_histogram::bins_for(ctx, group_len);
            let cpu_hist = cpu::weq_histogram::weq_histogram(&x, group_len, &ranges, bins).unwrap();
            let cpu_prefix = cpu::weq_histogram::weq_scan(&cpu_hist, bins);
            let input = GpuTensor::from_f32(ctx, &x, &[n]).unwrap();
            let r = minmax::ranges_tensor(ctx, ranges.len()).unwrap();
            r.write(ctx, &ranges).unwrap();
            cases += 1;
            let mut runs = Vec::new();
            for _ in 0..2 {
                runs.push(weq_histogram::weq_histogram(ctx, &input, group_len, &r, bins).unwrap());
            }
            let prefix_words: Vec<u32> = bytemuck::cast_slice(&cpu_prefix).to_vec();
            if runs[0] != runs[1] {
                failures.push(format!("{label}: two GPU runs differ"));
            } else if runs[0].0 != cpu_hist {
                failures.push(format!("{label}: GPU histogram differs from the CPU twin"));
            } else if runs[0].1 != prefix_words {
                failures.push(format!("{label}: GPU prefix sums differ from the CPU twin"));
            }
        }
    }
    finish("histogram_bit_identical", cases, failures);
}

#[test]
fn larger_than_one_binding() {
    let Some(base) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    // Per tensor: a 1 MiB group read through 512 KiB windows (16,384 bins still fit one).
    // Per channel: 64 KiB windows hold the histograms of two 400-element rows (2,048 bins
    // each), so 120 rows take 60 batches. The grid is folded at 37 workgroups per dimension.
    for (shape, granularity, binding) in [
        (vec![(1usize << 18) + 5], Granularity::Tensor, 512u64 << 10),
        (vec![120, 400], Granularity::Channel, 64 << 10),
    ] {
        let small = base.with_work_limits(WorkLimits {
            max_binding_bytes: binding + 4096,
            max_workgroups_per_dim: 37,
        });
        let label = format!(
            "weq(shape={shape:?}, {}, windows of {binding} B)",
            granularity.label()
        );
        let x = generate(Dist::Laplace, shape.iter().product(), seed_for(&label));
        let cfg = WeqConfig {
            bits: 3,
            granularity,
        };
        cases += 1;
        if let Err(e) = run_case(&small, &label, &x, &shape, &cfg) {
            failures.push(e);
        }
    }
    finish("larger_than_one_binding", cases, failures);
}

/// The GPU sweep of every group with its outputs poisoned first: each level, threshold and
/// info word must be written. Returns the thresholds and infos.
fn poisoned_sweep(
    ctx: &Context,
    ranges: &GpuTensor,
    prefix: &GpuTensor,
    groups: usize,
    bins: u32,
    bits: u32,
) -> Result<(Vec<f32>, Vec<WeqInfo>), String> {
    use wgquant::gpu::weq_sweep::{SweepOutputs, plan};
    let e = |e: wgquant::Error| e.to_string();
    let levels = poisoned(ctx, &[groups << bits], ElemType::F32);
    let thresholds = poisoned(ctx, &[groups << bits], ElemType::F32);
    let info = poisoned(ctx, &[groups * 4], ElemType::U32);
    let out = SweepOutputs {
        levels: &levels,
        thresholds: &thresholds,
        info: &info,
    };
    plan(
        ctx,
        ranges,
        prefix,
        0..groups as u64,
        bins,
        bits,
        weq::MAX_SWEEPS,
        &out,
    )
    .and_then(|p| p.run(ctx, |_| Ok(())))
    .map_err(e)?;
    check_written(
        ctx,
        &[
            ("levels", &levels),
            ("thresholds", &thresholds),
            ("info", &info),
        ],
    )?;
    Ok((
        thresholds.to_f32(ctx).map_err(e)?,
        info.download(ctx).map_err(e)?,
    ))
}

#[test]
fn twin_sweep_matches_gpu() {
    let Some(ctx) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, group_len, bits) in [
        (1 << 16, 1 << 16, 4u32),
        (64 * 300, 300, 3),
        (2000, 2000, 6),
        // 64 boundaries a phase: segments inside one thread's chunk and across many.
        (4096, 4096, 8),
        // A workgroup per group (4096 bins), several groups.
        (5 * 1000, 1000, 5),
        // One thread per group (256 bins), 200 groups.
        (200 * 64, 64, 4),
    ] {
        let label = format!("weq_sweep(n={n}, group={group_len}, bits={bits})");
        let x = generate(Dist::Laplace, n, seed_for(&label));
        let ranges = ranges_of(&x, group_len);
        let bins = weq_histogram::bins_for(ctx, group_len);
        let hist = cpu::weq_histogram::weq_histogram(&x, group_len, &ranges, bins).unwrap();
        let prefix = cpu::weq_histogram::weq_scan(&hist, bins);
        let (_, t_cpu, info_cpu) =
            cpu::weq_sweep::weq_sweep(&prefix, &ranges, bins, bits, weq::MAX_SWEEPS).unwrap();
        let r = minmax::ranges_tensor(ctx, ranges.len()).unwrap();
        r.write(ctx, &ranges).unwrap();
        let p = weq_histogram::prefix_tensor(ctx, ranges.len() as u64, bins).unwrap();
        p.write(ctx, &prefix).unwrap();
        cases += 1;
        let (t_gpu, info_gpu) = match poisoned_sweep(ctx, &r, &p, ranges.len(), bins, bits) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{label}: {e}"));
                continue;
            }
        };
        // log differs by ULPs between backends, so near-equal candidates may be chosen apart;
        // the partitions' S must agree to S_REL_TOL.
        let sc = cpu::weq_exact::partition_entropy(&x, group_len, bits, &t_cpu);
        let sg = cpu::weq_exact::partition_entropy(&x, group_len, bits, &t_gpu);
        for (k, (a, b)) in sc.iter().zip(&sg).enumerate() {
            if (a - b).abs() > S_REL_TOL * a {
                failures.push(format!(
                    "{label}: group {k}: twin S {a}, GPU S {b} ({:?} / {:?})",
                    info_cpu[k], info_gpu[k]
                ));
                break;
            }
        }
    }
    finish("twin_sweep_matches_gpu", cases, failures);
}

#[test]
fn file_round_trip_keeps_levels_and_codes() {
    use wgquant::format::disk;
    let x = generate(Dist::Laplace, 64 * 48, 7);
    let cfg = WeqConfig {
        bits: 3,
        granularity: Granularity::Channel,
    };
    let qt = weq::quantize(&Backend::Cpu, "w", &x, &[64, 48], &cfg).unwrap();
    let (record, parts) = disk::to_parts(
        "w",
        &qt,
        "weq",
        safetensors::Dtype::F32,
        None,
        disk::Storage::Dense,
    )
    .unwrap();
    // Decoding needs the levels only; the thresholds stay in memory.
    assert!(!parts.iter().any(|p| p.name.contains("threshold")));
    let back = disk::from_parts("w", &record, |name| {
        parts
            .iter()
            .find(|p| p.name == name)
            .map(|p| disk::StoredPart {
                dtype: p.dtype,
                shape: p.shape.clone(),
                data: &p.data,
            })
    })
    .unwrap();
    let mut expect = qt.clone();
    if let Encoding::Codebook { thresholds, .. } = &mut expect.encoding {
        *thresholds = None;
    }
    assert_eq!(back, expect);
}
