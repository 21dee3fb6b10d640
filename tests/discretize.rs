//! Linear/exponential discretization (ALGORITHMS.md §4): the GPU x0 search against its CPU
//! twin on awkward shapes and lowered work limits, the search's interior maximum against a
//! dense CPU scan, and the quantized tensor's properties (nearest real level, pad never chosen,
//! variance kept, degenerate groups exact).

mod common;

use common::{Dist, POISON, check_written, finish, generate, gpu, seed_for};
use wgquant::cpu::discretize::{self as twin, Ladder, Partition, SearchSpec, SearchState};
use wgquant::format::{Encoding, Granularity, pack};
use wgquant::gpu::WorkLimits;
use wgquant::quant::discretize::{self, DiscretizeConfig};
use wgquant::quant::{self, Backend};

/// One GPU test at a time: wgpu's GL backend gives up (panics) when a thread waits more than
/// a second for the GL context another thread holds through a long submit.
static GPU_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    GPU_SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn spec(partition: Partition, bits: u32) -> SearchSpec {
    SearchSpec {
        partition,
        bits,
        candidates: 15,
        rounds: 2,
    }
}

/// The correlation of x0 on group `g` of `x`, rescored independently in f64 sums (the twin's
/// own rounding to levels).
fn rescore(x: &[f32], group_len: usize, g: usize, x0: f32, spec: &SearchSpec) -> f64 {
    let group = &x[g * group_len..][..group_len];
    let m = group.iter().fold(0f32, |a, v| a.max(v.abs()));
    let l = Ladder::new(x0, spec.half_levels(), spec.partition);
    let n = group.len() as f64;
    let (mut sq, mut sqq, mut swq, mut sw, mut sww) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &v in group {
        let q = f64::from(l.magnitude_reference(v.abs(), m))
            * f64::from(v.signum())
            * f64::from(u8::from(v != 0.0));
        let w = f64::from(v);
        (sq, sqq, swq, sw, sww) = (sq + q, sqq + q * q, swq + w * q, sw + w, sww + w * w);
    }
    let (cov, vw, vq) = (n * swq - sw * sq, n * sww - sw * sw, n * sqq - sq * sq);
    if vw > 0.0 && vq > 0.0 {
        cov / (vw.sqrt() * vq.sqrt())
    } else {
        0.0
    }
}

/// The GPU search with the outputs it computes (ranges, correlations) poisoned first: every
/// word must be written. Returns the final states and the last round's correlations.
fn poisoned_search(
    ctx: &wgquant::gpu::Context,
    t: &wgquant::gpu::GpuTensor,
    group_len: usize,
    s: &SearchSpec,
) -> Result<(Vec<SearchState>, Vec<f32>), String> {
    use wgquant::gpu::discretize::{SearchBuffers, encode};
    let e = |e: wgquant::Error| e.to_string();
    let bufs = SearchBuffers::new(ctx, t.numel() / group_len, s.candidates).map_err(e)?;
    for b in [&bufs.ranges, &bufs.scores] {
        b.fill_bits(ctx, POISON).map_err(e)?;
    }
    ctx.run("discretize", |enc| encode(ctx, enc, t, group_len, s, &bufs))
        .map_err(e)?;
    check_written(ctx, &[("ranges", &bufs.ranges), ("scores", &bufs.scores)])?;
    let ranges: Vec<wgquant::affine::GroupRange> = bufs.ranges.download(ctx).map_err(e)?;
    let mut states: Vec<SearchState> = bufs.states.download(ctx).map_err(e)?;
    for (st, r) in states.iter_mut().zip(&ranges) {
        st.finish(r.lo.abs().max(r.hi.abs()));
    }
    let scores = bufs.scores.to_f32(ctx).map_err(e)?;
    let corrs = wgquant::kernel::discretize::correlations(&scores, &states, s.candidates);
    Ok((states, corrs))
}

/// States and correlations equal bit for bit (the first difference, or Ok).
fn same_search(
    gs: &[SearchState],
    gc: &[f32],
    cs: &[SearchState],
    cc: &[f32],
) -> Result<(), String> {
    let bits = |s: &SearchState| bytemuck::cast::<SearchState, [u32; 8]>(*s);
    if let Some(g) =
        (0..gs.len().max(cs.len())).find(|&g| gs.get(g).map(bits) != cs.get(g).map(bits))
    {
        return Err(format!(
            "state {g}: gpu {:?} cpu {:?}",
            gs.get(g),
            cs.get(g)
        ));
    }
    if let Some(i) = (0..gc.len().max(cc.len()))
        .find(|&i| gc.get(i).map(|v| v.to_bits()) != cc.get(i).map(|v| v.to_bits()))
    {
        return Err(format!(
            "correlation {i}: gpu {:?} cpu {:?}",
            gc.get(i),
            cc.get(i)
        ));
    }
    Ok(())
}

#[test]
fn search_matches_cpu() {
    let _serial = serial();
    let Some(base) = gpu() else { return };
    let small = base.with_work_limits(WorkLimits {
        max_binding_bytes: 64 * 1024 + 12,
        max_workgroups_per_dim: 5,
    });
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, group_len) in [
        (1usize, 1usize),
        (255, 255),
        (257, 257),
        (1757, 251),
        (33 * 7, 7),
        (40_000, 40_000),
        (120_001, 120_001),
    ] {
        for (partition, bits) in [
            (Partition::Linear, 2),
            (Partition::Linear, 4),
            (Partition::Exponential, 3),
            (Partition::Exponential, 8),
        ] {
            for (ctx, limits) in [(base, "device"), (&small, "small")] {
                // Small windows and grids for the large inputs, at two settings.
                if limits == "small" && (n < 40_000 || bits == 2 || bits == 8) {
                    continue;
                }
                let label = format!(
                    "discretize(n={n}, group={group_len}, {partition:?}, bits={bits}, limits={limits})"
                );
                let seed = seed_for(&label);
                let x = generate(Dist::ALL[cases % 3], n, seed);
                let s = spec(partition, bits);
                cases += 1;
                let t = wgquant::gpu::GpuTensor::from_f32(ctx, &x, &[n]).unwrap();
                // Bit for bit: the twin with the device's tiling (its summation order).
                let tiling = wgquant::gpu::discretize::tiling(ctx);
                let (_, cs, cc) =
                    twin::search_tiled(&x, group_len, &s, SearchState::INITIAL, tiling).unwrap();
                match poisoned_search(ctx, &t, group_len, &s) {
                    Ok((gs, gc)) => {
                        if let Err(e) = same_search(&gs, &gc, &cs, &cc) {
                            failures.push(format!("{label} seed={seed:#x}: {e}"));
                        }
                    }
                    Err(e) => failures.push(format!("{label}: gpu: {e}")),
                }
            }
        }
    }
    finish("search_matches_cpu", cases, failures);
}

/// The search (coarse grid and refinements) lands on the maximum of a dense scan of x0, and
/// that maximum is interior: the correlation falls off on both sides.
#[test]
fn search_finds_the_interior_maximum_of_a_dense_scan() {
    let _serial = serial();
    let ctx = gpu();
    let mut failures = Vec::new();
    let mut cases = 0;
    for dist in [Dist::Normal, Dist::Laplace] {
        let x = generate(
            dist,
            10_000,
            seed_for(&format!("dense-scan-{}", dist.name())),
        );
        for (partition, bits) in [
            (Partition::Linear, 3),
            (Partition::Exponential, 3),
            (Partition::Linear, 4),
            (Partition::Exponential, 5),
        ] {
            let s = SearchSpec {
                partition,
                bits,
                candidates: 63,
                rounds: 3,
            };
            // Dense scan: 1,000 points in (0, 1).
            let points = 1000;
            let scan: Vec<(f32, f64)> = (1..points)
                .map(|i| {
                    let x0 = i as f32 / points as f32;
                    (x0, rescore(&x, x.len(), 0, x0, &s))
                })
                .collect();
            let (best_i, &(dense_x0, dense_best)) = scan
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
                .unwrap();
            let interior = best_i > 10
                && best_i + 10 < scan.len()
                && scan[0].1 < dense_best - 1e-3
                && scan[scan.len() - 1].1 < dense_best - 1e-3;
            let mut backends = vec![("cpu", Backend::Cpu)];
            if let Some(c) = ctx {
                backends.push(("gpu", Backend::Gpu(c)));
            }
            for (name, backend) in backends {
                cases += 1;
                let label = format!("{} {partition:?} b={bits} on {name}", dist.name());
                let found = discretize::search(&backend, &x, x.len(), &s)
                    .unwrap()
                    .states[0];
                let rescored = rescore(&x, x.len(), 0, found.best_x0, &s);
                // The search may beat the scan's grid (it refines below 1/1000); it must not
                // lose to it.
                if !interior
                    || rescored < dense_best - 1e-5
                    || (found.best_x0 - dense_x0).abs() > 0.02
                {
                    failures.push(format!(
                        "{label}: search x0 {} (corr {rescored:.7}) vs dense scan x0 {dense_x0} \
                         (corr {dense_best:.7}), interior {interior}",
                        found.best_x0
                    ));
                }
            }
        }
    }
    finish(
        "search_finds_the_interior_maximum_of_a_dense_scan",
        cases,
        failures,
    );
}

/// Codes are the nearest real level of the search's ladder (the pad code never appears),
/// levels keep the group's variance, GPU and CPU tensors agree.
#[test]
fn quantized_tensor_properties() {
    let _serial = serial();
    let ctx = gpu();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (shape, granularity) in [
        (vec![64usize, 96], Granularity::Channel),
        (vec![3000], Granularity::Tensor),
        (vec![5, 257], Granularity::Channel),
    ] {
        for (partition, bits) in [
            (Partition::Linear, 2),
            (Partition::Exponential, 3),
            (Partition::Exponential, 4),
            (Partition::Linear, 6),
        ] {
            let n: usize = shape.iter().product();
            let label = format!("{partition:?} b={bits} {shape:?} {granularity:?}");
            let x = generate(Dist::Laplace, n, seed_for(&label));
            let cfg = DiscretizeConfig::new(partition, bits, granularity);
            let mut backends = vec![Backend::Cpu];
            if let Some(c) = ctx {
                backends.push(Backend::Gpu(c));
            }
            let mut decoded = Vec::new();
            for backend in &backends {
                cases += 1;
                let qt = discretize::quantize(backend, "w", &x, &shape, &cfg).unwrap();
                let Encoding::Codebook { levels, .. } = &qt.encoding else {
                    unreachable!()
                };
                let group_len = qt.group_len().unwrap();
                let codes = pack::unpack(&qt.codes, n, bits);
                let y = quant::dequantize(backend, &qt).unwrap();
                // The same (deterministic) search gives each group's x0, hence the ladder m·r
                // the codes must be nearest in.
                let states = discretize::search(backend, &x, group_len, &cfg.spec())
                    .unwrap()
                    .states;
                let ladders: Vec<Ladder> = states
                    .iter()
                    .map(|s| Ladder::new(s.best_x0, cfg.spec().half_levels(), partition))
                    .collect();
                if let Err(e) = check_groups(&x, &codes, levels, &ladders, &y, group_len) {
                    failures.push(format!("{label} on {}: {e}", backend.name()));
                }
                decoded.push(y);
            }
            if decoded.len() == 2 {
                let same = decoded[0]
                    .iter()
                    .zip(&decoded[1])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                if !same {
                    failures.push(format!("{label}: cpu and gpu decode differently"));
                }
            }
        }
    }
    finish("quantized_tensor_properties", cases, failures);
}

fn check_groups(
    x: &[f32],
    codes: &[u32],
    levels: &[f32],
    ladders: &[Ladder],
    y: &[f32],
    group_len: usize,
) -> Result<(), String> {
    let per = levels.len() / ladders.len();
    for (g, ladder) in ladders.iter().enumerate() {
        let table = &levels[g * per..][..per];
        if table.windows(2).any(|w| w[0] > w[1]) || table[per - 1] != table[per - 2] {
            return Err(format!(
                "group {g}: levels not sorted or pad not the top: {table:?}"
            ));
        }
        if table[per / 2 - 1] != 0.0 || table[0] != -table[per - 2] {
            return Err(format!(
                "group {g}: levels not symmetric around 0: {table:?}"
            ));
        }
        let xs = &x[g * group_len..][..group_len];
        let m = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let unscaled = discretize::padded_levels(ladder, per.trailing_zeros(), m);
        for (i, &v) in xs.iter().enumerate() {
            let c = codes[g * group_len + i] as usize;
            if c == per - 1 {
                return Err(format!("element {i}: the pad code was produced"));
            }
            // Nearest level of the unscaled ladder m·r.
            let at = |j: usize| unscaled[j];
            let d = (v - at(c)).abs();
            let best = (0..per - 1)
                .map(|j| (v - at(j)).abs())
                .fold(f32::MAX, f32::min);
            if d > best + 4.0 * f32::EPSILON * m.max(v.abs()) {
                return Err(format!(
                    "group {g} element {i} = {v}: level {} at {d}, nearest at {best}",
                    at(c)
                ));
            }
        }
        // Variance kept (the search's f32 sums and the decode agree to ~1e-4 relative).
        let var = |s: &[f32]| {
            let mean = s.iter().map(|&v| f64::from(v)).sum::<f64>() / s.len() as f64;
            s.iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / s.len() as f64
        };
        let (vx, vy) = (var(xs), var(&y[g * group_len..][..group_len]));
        if vx > 0.0 && (vx - vy).abs() > 1e-3 * vx {
            return Err(format!("group {g}: variance {vx:e} became {vy:e}"));
        }
    }
    Ok(())
}

/// All-zero and constant groups survive exactly (the variance factor falls back to max|w|).
#[test]
fn degenerate_groups_are_exact() {
    let _serial = serial();
    let ctx = gpu();
    let mut backends = vec![Backend::Cpu];
    if let Some(c) = ctx {
        backends.push(Backend::Gpu(c));
    }
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut x = vec![0.0f32; 4 * 50];
    x[50..100].fill(-0.75);
    x[100..150].fill(3.5);
    for backend in &backends {
        for partition in [Partition::Linear, Partition::Exponential] {
            cases += 1;
            let cfg = DiscretizeConfig::new(partition, 3, Granularity::Channel);
            let qt = discretize::quantize(backend, "w", &x, &[4, 50], &cfg).unwrap();
            let y = quant::dequantize(backend, &qt).unwrap();
            if y != x {
                failures.push(format!("{partition:?} on {}: {y:?}", backend.name()));
            }
        }
    }
    finish("degenerate_groups_are_exact", cases, failures);
}

#[test]
fn bad_settings_are_errors() {
    let _serial = serial();
    let x = vec![0.5f32; 64];
    for cfg in [
        DiscretizeConfig::new(Partition::Linear, 1, Granularity::Tensor),
        DiscretizeConfig::new(Partition::Linear, 9, Granularity::Tensor),
        DiscretizeConfig::new(Partition::Exponential, 4, Granularity::Group(32)),
        DiscretizeConfig {
            candidates: 0,
            ..DiscretizeConfig::new(Partition::Linear, 4, Granularity::Tensor)
        },
    ] {
        assert!(
            discretize::quantize(&Backend::Cpu, "w", &x, &[64], &cfg).is_err(),
            "{cfg:?}"
        );
    }
    let mut nan = x.clone();
    nan[3] = f32::NAN;
    let cfg = DiscretizeConfig::new(Partition::Linear, 4, Granularity::Tensor);
    assert!(matches!(
        discretize::quantize(&Backend::Cpu, "w", &nan, &[64], &cfg),
        Err(wgquant::Error::NonFinite { index: 3, .. })
    ));
    let bad_start = SearchState {
        lo: 0.5,
        hi: 0.25,
        ..SearchState::INITIAL
    };
    assert!(
        discretize::search_from(
            &Backend::Cpu,
            &x,
            64,
            &spec(Partition::Linear, 3),
            bad_start
        )
        .is_err()
    );
}

/// The CPU twin's table-driven sums equal its formula-driven reference bit for bit.
#[test]
fn cpu_moments_equal_reference() {
    for (partition, bits) in [
        (Partition::Linear, 2),
        (Partition::Linear, 5),
        (Partition::Exponential, 3),
        (Partition::Exponential, 8),
    ] {
        let x = generate(
            Dist::Outliers,
            70_001,
            seed_for(&format!("ref {partition:?} {bits}")),
        );
        let r = wgquant::cpu::minmax::group_ranges(&x, x.len()).unwrap()[0];
        let k = (1 << (bits - 1)) - 1;
        for x0 in [0.01f32, 0.2, 0.77] {
            let l = Ladder::new(x0, k, partition);
            assert_eq!(
                twin::moments(&x, &r, &l),
                twin::moments_reference(&x, &r, &l),
                "{partition:?} b={bits} x0={x0}"
            );
        }
    }
}

/// Issue 12: search and quantize write the same bits on both backends, for awkward row lengths
/// and both partitions, bits 2..=8, per tensor and per channel, and a tensor of 2^20 + 3
/// (a smaller search there: it costs C·R passes over the tensor on a CPU-emulated device).
#[test]
fn search_and_quantize_are_bit_identical_on_both_backends() {
    let _serial = serial();
    let Some(ctx) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut shapes: Vec<(Vec<usize>, Granularity, u32, u32)> = Vec::new();
    for len in [1usize, 3, 33, 1757] {
        shapes.push((vec![len], Granularity::Tensor, 63, 3));
        shapes.push((vec![5, len], Granularity::Channel, 63, 3));
    }
    shapes.push((vec![(1 << 20) + 3], Granularity::Tensor, 5, 2));
    for (shape, granularity, candidates, rounds) in shapes {
        for partition in [Partition::Linear, Partition::Exponential] {
            for bits in 2..=8 {
                cases += 1;
                let n: usize = shape.iter().product();
                let label =
                    format!("discretize({partition:?}, b={bits}, {shape:?}, {granularity:?})");
                let seed = seed_for(&label);
                let x = generate(Dist::ALL[cases % 3], n, seed);
                let cfg = DiscretizeConfig {
                    candidates,
                    rounds,
                    ..DiscretizeConfig::new(partition, bits, granularity)
                };
                let group_len = cfg.group_len(&shape).unwrap();
                let s = cfg.spec();
                let t = wgquant::gpu::GpuTensor::from_f32(ctx, &x, &[n]).unwrap();
                let (cs, cc) = twin::search(&x, group_len, &s).unwrap();
                match poisoned_search(ctx, &t, group_len, &s) {
                    Ok((gs, gc)) => {
                        if let Err(e) = same_search(&gs, &gc, &cs, &cc) {
                            failures.push(format!("{label} seed={seed:#x}: search: {e}"));
                            continue;
                        }
                    }
                    Err(e) => {
                        failures.push(format!("{label}: gpu: {e}"));
                        continue;
                    }
                }
                let q = |b: &Backend<'_>| discretize::quantize(b, "w", &x, &shape, &cfg).unwrap();
                let (qc, qg) = (q(&Backend::Cpu), q(&Backend::Gpu(ctx)));
                let (Encoding::Codebook { levels: lc, .. }, Encoding::Codebook { levels: lg, .. }) =
                    (&qc.encoding, &qg.encoding)
                else {
                    unreachable!()
                };
                let lbits = |l: &[f32]| l.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                if lbits(lc) != lbits(lg) {
                    failures.push(format!("{label} seed={seed:#x}: levels differ"));
                } else if qc.codes != qg.codes {
                    failures.push(format!("{label} seed={seed:#x}: codes differ"));
                }
            }
        }
    }
    finish(
        "search_and_quantize_are_bit_identical_on_both_backends",
        cases,
        failures,
    );
}

/// `wgquant quantize --scheme lin4|exp4` writes the same file with `--device cpu` and `gpu`.
#[test]
fn cli_discretize_files_are_identical_on_both_devices() {
    use std::process::Command;
    let _serial = serial();
    if gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let x = generate(
        Dist::Laplace,
        96 * 40 + 1757,
        seed_for("cli discretize parity"),
    );
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let model = dir.path().join("model.safetensors");
    let tensors = vec![
        (
            "a.weight".to_string(),
            wgquant::checkpoint::file::OutTensor {
                dtype: safetensors::Dtype::F32,
                shape: vec![96, 40],
                data: std::borrow::Cow::Owned(bytes(&x[..96 * 40])),
            },
        ),
        (
            "b.weight".to_string(),
            wgquant::checkpoint::file::OutTensor {
                dtype: safetensors::Dtype::F32,
                shape: vec![1757],
                data: std::borrow::Cow::Owned(bytes(&x[96 * 40..])),
            },
        ),
    ];
    wgquant::checkpoint::file::write_atomic(&model, &tensors, Default::default()).unwrap();
    for scheme in ["lin4", "exp4"] {
        for granularity in ["tensor", "channel"] {
            let mut files = Vec::new();
            for device in ["cpu", "gpu"] {
                let out = dir
                    .path()
                    .join(format!("{scheme}-{granularity}-{device}.safetensors"));
                let o = Command::new(env!("CARGO_BIN_EXE_wgquant"))
                    .args([
                        "quantize",
                        model.to_str().unwrap(),
                        "-o",
                        out.to_str().unwrap(),
                        "--scheme",
                        scheme,
                        "--granularity",
                        granularity,
                        "--device",
                        device,
                    ])
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "{scheme} {granularity} {device}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                files.push(std::fs::read(&out).unwrap());
            }
            assert!(
                files[0] == files[1],
                "{scheme} {granularity}: cpu and gpu files differ"
            );
        }
    }
}
