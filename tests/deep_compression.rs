//! Deep Compression (ALGORITHMS.md §5): Huffman coding and relative-index sparse storage on
//! adversarial inputs, the pruning mask and k-means kernels on GPU against their CPU twins
//! (k-means bit for bit: sums, centroids, codes, iterations, and the CLI's dc files), k-means
//! against a brute-force Lloyd on tiny inputs, the centroid gradient, and the sparse on-disk
//! round trip with its stage sizes.

mod common;

use common::{Dist, finish, generate, gpu, rng, seed_for};
use rand::RngExt;
use wgquant::cpu;
use wgquant::format::disk::{self, Storage, StoredPart};
use wgquant::format::{Encoding, huffman, pack, sparse};
use wgquant::gpu::{Context, GpuTensor, WorkLimits};
use wgquant::quant::deep_compression::{self, DcConfig, StageSizes};
use wgquant::quant::kmeans::{self, KmeansConfig, KmeansInit};
use wgquant::quant::{self, Backend, codebook, prune};

/// One GPU test at a time: wgpu's GL backend gives up (panics) when a thread waits more than
/// a second for the GL context another thread holds through a long submit.
static GPU_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    GPU_SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn backends(ctx: Option<&'static Context>) -> Vec<Backend<'static>> {
    let mut out = vec![Backend::Cpu];
    if let Some(c) = ctx {
        out.push(Backend::Gpu(c));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Huffman
// ---------------------------------------------------------------------------------------------

/// Encode, check the code, serialize, parse, decode.
fn huffman_round_trip(label: &str, symbols: &[u32], alphabet: usize) -> Result<u64, String> {
    let s = huffman::encode(symbols, alphabet).map_err(|e| format!("{label}: encode: {e}"))?;
    let max = s.lengths.iter().copied().max().unwrap_or(0);
    if u32::from(max) > huffman::MAX_CODE_LEN {
        return Err(format!("{label}: code length {max} over the limit"));
    }
    let kraft: f64 = s
        .lengths
        .iter()
        .filter(|&&l| l > 0)
        .map(|&l| 0.5f64.powi(i32::from(l)))
        .sum();
    if kraft > 1.0 + 1e-12 {
        return Err(format!("{label}: Kraft sum {kraft} > 1"));
    }
    let parsed = huffman::HuffmanStream::from_bytes(&s.to_bytes())
        .map_err(|e| format!("{label}: parse: {e}"))?;
    if parsed != s {
        return Err(format!("{label}: serialized form does not round-trip"));
    }
    let back = huffman::decode(&parsed).map_err(|e| format!("{label}: decode: {e}"))?;
    if back != symbols {
        let i = back.iter().zip(symbols).position(|(a, b)| a != b);
        return Err(format!(
            "{label}: decoded {} symbols, first difference at {i:?}",
            back.len()
        ));
    }
    Ok(s.bits)
}

/// Bits of an unrestricted Huffman code (merging the two lightest weights), the optimum
/// package-merge must reach when the length limit does not bind.
fn huffman_cost(freqs: &[u64]) -> u64 {
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<u64>> = freqs
        .iter()
        .filter(|&&f| f > 0)
        .map(|&f| std::cmp::Reverse(f))
        .collect();
    if heap.len() == 1 {
        return freqs.iter().sum();
    }
    let mut cost = 0;
    while heap.len() > 1 {
        let (a, b) = (heap.pop().unwrap().0, heap.pop().unwrap().0);
        cost += a + b;
        heap.push(std::cmp::Reverse(a + b));
    }
    cost
}

#[test]
fn huffman_round_trips_adversarial_inputs() {
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut r = rng(seed_for("huffman"));
    let mut check = |label: &str, symbols: Vec<u32>, alphabet: usize, optimal: bool| {
        cases += 1;
        match huffman_round_trip(label, &symbols, alphabet) {
            Ok(bits) if optimal => {
                let mut freqs = vec![0u64; alphabet];
                symbols.iter().for_each(|&s| freqs[s as usize] += 1);
                let best = huffman_cost(&freqs);
                if bits != best {
                    failures.push(format!("{label}: {bits} bits, Huffman needs {best}"));
                }
            }
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    };
    check("empty", vec![], 32, true);
    check("one symbol", vec![5], 32, true);
    check("all equal", vec![7; 100_000], 32, true);
    check("two symbols", vec![0, 31, 31, 0, 0], 32, true);
    check("alphabet of one", vec![0; 10], 1, true);
    check(
        "2^16 distinct symbols",
        (0..1u32 << 16).collect(),
        1 << 16,
        true,
    );
    let spread: Vec<u32> = (0..300_000)
        .map(|_| r.random_range(0..1u32 << 16))
        .collect();
    check("2^16 alphabet, random", spread, 1 << 16, true);
    // Fibonacci frequencies make an unrestricted Huffman code ~40 bits deep: the limit binds.
    let mut fib = vec![1u64, 1];
    while fib.len() < 40 {
        let n = fib[fib.len() - 1] + fib[fib.len() - 2];
        fib.push(n);
    }
    let skewed: Vec<u32> = fib
        .iter()
        .enumerate()
        .flat_map(|(s, &f)| std::iter::repeat_n(s as u32, f.min(1 << 22) as usize))
        .collect();
    check("fibonacci, length-limited", skewed, 64, false);
    let geometric: Vec<u32> = (0..200_000)
        .map(|_| (r.random::<f64>().ln() / 0.5f64.ln()).floor().min(31.0) as u32)
        .collect();
    check("geometric gaps", geometric, 32, true);
    finish("huffman_round_trips_adversarial_inputs", cases, failures);
}

#[test]
fn huffman_rejects_malformed_streams() {
    let s = huffman::encode(&[1, 2, 3, 3, 3, 0, 1], 4).unwrap();
    let bytes = s.to_bytes();
    // Truncated and extended byte strings.
    for cut in [0, 5, 19, bytes.len() - 1] {
        assert!(
            huffman::HuffmanStream::from_bytes(&bytes[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(huffman::HuffmanStream::from_bytes(&long).is_err());
    // Oversubscribed code lengths.
    let mut bad = s.clone();
    bad.lengths = vec![1, 1, 1, 0];
    assert!(huffman::decode(&bad).is_err());
    // More symbols than the bits hold, or bits left over.
    let mut bad = s.clone();
    bad.symbols += 1;
    assert!(huffman::decode(&bad).is_err());
    let mut bad = s.clone();
    bad.symbols -= 1;
    assert!(huffman::decode(&bad).is_err());
    // Symbols outside the alphabet are refused by the encoder.
    assert!(huffman::encode(&[4], 4).is_err());
    assert!(huffman::encode(&[0], 0).is_err());
    // Random garbage never panics.
    let mut r = rng(seed_for("huffman garbage"));
    for _ in 0..200 {
        let mut b = bytes.clone();
        let i = r.random_range(0..b.len());
        b[i] ^= 1 << r.random_range(0..8);
        if let Ok(s) = huffman::HuffmanStream::from_bytes(&b) {
            let _ = huffman::decode(&s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sparse storage
// ---------------------------------------------------------------------------------------------

#[test]
fn sparse_round_trips_gaps_wider_than_the_index() {
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut r = rng(seed_for("sparse"));
    for index_bits in [1u32, 2, 3, 5, 8] {
        let m = sparse::filler(index_bits) as usize;
        let mut layouts: Vec<(String, usize, Vec<usize>)> = vec![
            ("empty tensor".into(), 0, vec![]),
            ("all pruned".into(), 1000, vec![]),
            ("all kept".into(), 100, (0..100).collect()),
            ("only the last".into(), 5000, vec![4999]),
            ("only the first".into(), 5000, vec![0]),
        ];
        // Runs of exactly M − 1, M, M + 1, 2M, 2M + 1 and 1000 pruned elements.
        let mut pos = Vec::new();
        let mut at = 0;
        for run in [m - 1, m, m + 1, 2 * m, 2 * m + 1, 1000, 0, 3] {
            at += run;
            pos.push(at);
            at += 1;
        }
        layouts.push(("runs around the index width".into(), at + 77, pos));
        let random: Vec<usize> = (0..20_000).filter(|_| r.random_bool(0.03)).collect();
        layouts.push(("3% kept".into(), 20_000, random));
        for (name, len, kept) in layouts {
            for code_bits in [1u32, 5] {
                cases += 1;
                let label = format!("{name} (len {len}, index {index_bits}, codes {code_bits})");
                let mut mask = vec![0u32; pack::packed_words(len, 1)];
                let mut codes = vec![0u32; len];
                for &p in &kept {
                    pack::put_code(&mut mask, p, 1, 1);
                    codes[p] = r.random_range(0..1u32 << code_bits);
                }
                let words = pack::pack(&codes, code_bits);
                let s = sparse::encode(&mask, &words, len, code_bits, index_bits).unwrap();
                if s.gaps.iter().any(|&g| g > m as u32) || s.codes.len() != kept.len() {
                    failures.push(format!("{label}: malformed stream"));
                    continue;
                }
                let fillers = s.fillers();
                let expected: usize = kept
                    .iter()
                    .scan(0usize, |cur, &p| {
                        let z = p - *cur;
                        *cur = p + 1;
                        Some(z / m)
                    })
                    .sum();
                match sparse::decode(&s, code_bits) {
                    Ok((dm, dc)) if dm == mask && dc == words && fillers == expected => {}
                    Ok(_) => failures.push(format!(
                        "{label}: round trip differs ({fillers} fillers, expected {expected})"
                    )),
                    Err(e) => failures.push(format!("{label}: {e}")),
                }
            }
        }
    }
    finish(
        "sparse_round_trips_gaps_wider_than_the_index",
        cases,
        failures,
    );
}

#[test]
fn sparse_rejects_malformed_streams() {
    let mk = |gaps: Vec<u32>, codes: Vec<u32>| sparse::SparseStream {
        len: 10,
        index_bits: 2,
        gaps,
        codes,
    };
    assert!(
        sparse::decode(&mk(vec![0, 1], vec![1]), 2).is_err(),
        "missing code"
    );
    assert!(
        sparse::decode(&mk(vec![0], vec![1, 2]), 2).is_err(),
        "extra code"
    );
    assert!(
        sparse::decode(&mk(vec![3, 3, 3, 2], vec![0]), 2).is_err(),
        "past the end"
    );
    assert!(
        sparse::decode(&mk(vec![4], vec![0]), 2).is_err(),
        "gap too wide"
    );
    assert!(
        sparse::decode(&mk(vec![0], vec![4]), 2).is_err(),
        "code too wide"
    );
    assert!(
        sparse::encode(&[1], &[0], 5, 2, 0).is_err(),
        "index width 0"
    );
    assert!(
        sparse::encode(&[1], &[0, 0], 5, 2, 3).is_err(),
        "wrong code words"
    );
}

// ---------------------------------------------------------------------------------------------
// Kernels against their CPU twins
// ---------------------------------------------------------------------------------------------

/// `prune::mask` on the GPU with the mask words poisoned first (every word is overwritten).
fn poisoned_mask(ctx: &Context, x: &[f32], threshold: f32) -> wgquant::Result<Vec<u32>> {
    use wgquant::gpu::ElemType;
    let seg = wgquant::affine::AffineSegment::codebook(x.len(), x.len().max(1), 1);
    let input = GpuTensor::from_f32(ctx, x, &[x.len()])?;
    let t = GpuTensor::from_f32(ctx, &[threshold], &[1])?;
    let out = common::poisoned(ctx, &[pack::packed_words(x.len(), 1)], ElemType::U32);
    wgquant::gpu::prune::prune_mask(ctx, &input, &out, &t, &[seg])?;
    out.to_u32(ctx)
}

#[test]
fn prune_mask_matches_cpu() {
    let _serial = serial();
    let Some(ctx) = gpu() else { return };
    let small = ctx.with_work_limits(WorkLimits {
        max_binding_bytes: 16 * 1024 + 12,
        max_workgroups_per_dim: 3,
    });
    let mut failures = Vec::new();
    let mut cases = 0;
    for n in [1usize, 33, 1757, (1 << 20) + 3] {
        for sparsity in [0.0f32, 0.5, 0.9, 1.0] {
            cases += 1;
            let label = format!("prune(n={n}, sparsity={sparsity})");
            let x = generate(Dist::Laplace, n, seed_for(&label));
            let t = prune::magnitude_threshold(&x, sparsity).unwrap();
            let c = prune::mask(&Backend::Cpu, &x, t).unwrap();
            for (name, ctx) in [("device", ctx), ("small", &small)] {
                let g = poisoned_mask(ctx, &x, t).unwrap();
                if g != c {
                    failures.push(format!("{label} on {name}: GPU mask differs"));
                }
            }
            // Continuous data has no ties, so exactly round(S·n) elements are pruned.
            let pruned = n - prune::kept(&c);
            let want = (f64::from(sparsity) * n as f64).round() as usize;
            if pruned != want {
                failures.push(format!("{label}: pruned {pruned}, wanted {want}"));
            }
        }
    }
    finish("prune_mask_matches_cpu", cases, failures);
}

/// Lowered limits under which a k-means still runs, for parity across dispatch layouts:
/// `small` splits every workgroup (up to 4 bits) over dispatches of 63 elements per thread and
/// its records over windows of two workgroups; `mid` splits 8-bit workgroups in four, windows
/// every two workgroups of 8 bits, and batches lane sums 9 clusters at a time (any bits).
fn lowered(ctx: &Context) -> [(&'static str, Context, u32); 2] {
    [
        (
            "small",
            ctx.with_work_limits(WorkLimits {
                max_binding_bytes: 64 * 1024 + 12,
                max_workgroups_per_dim: 3,
            }),
            4,
        ),
        (
            "mid",
            ctx.with_work_limits(WorkLimits {
                max_binding_bytes: (1 << 20) + 12,
                max_workgroups_per_dim: 3,
            }),
            8,
        ),
    ]
}

/// Per-cluster sums (the centroid gradient), means and changed-code counts: GPU against CPU
/// bit for bit, with and without a mask, on the device's limits and on lowered ones.
#[test]
fn cluster_sums_match_cpu() {
    let _serial = serial();
    let Some(ctx) = gpu() else { return };
    let lowered = lowered(ctx);
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, bits) in [
        (1usize, 1u32),
        (255, 2),
        (4097, 4),
        (70_001, 3),
        (300_007, 8),
        ((1 << 20) + 3, 4),
        ((1 << 21) + 5, 8),
    ] {
        for masked in [false, true] {
            let mut devices = vec![("device", ctx)];
            for (name, c, max_bits) in &lowered {
                if bits <= *max_bits && n >= 4097 && (n < 1 << 21 || *name == "mid") {
                    devices.push((name, c));
                }
            }
            for (name, c) in devices {
                cases += 1;
                let label = format!("cluster_sums(n={n}, bits={bits}, mask={masked}, {name})");
                let seed = seed_for(&label);
                let x = generate(Dist::Normal, n, seed);
                let mut r = rng(seed ^ 1);
                let codes: Vec<u32> = (0..n).map(|_| r.random_range(0..1u32 << bits)).collect();
                let old: Vec<u32> = codes
                    .iter()
                    .map(|&c| {
                        if r.random_bool(0.1) {
                            (c + 1) % (1 << bits)
                        } else {
                            c
                        }
                    })
                    .collect();
                let keep: Vec<u32> = (0..n).map(|_| u32::from(r.random_bool(0.7))).collect();
                let (codes, old) = (pack::pack(&codes, bits), pack::pack(&old, bits));
                let mask = masked.then(|| pack::pack(&keep, 1));
                if let Err(e) = compare_sums(c, &x, &codes, &old, mask.as_deref(), bits) {
                    failures.push(format!("{label} seed={seed:#x}: {e}"));
                }
            }
        }
    }
    finish("cluster_sums_match_cpu", cases, failures);
}

/// Whether two f32 slices hold the same bits.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn compare_sums(
    ctx: &Context,
    x: &[f32],
    codes: &[u32],
    old: &[u32],
    mask: Option<&[u32]>,
    bits: u32,
) -> Result<(), String> {
    use wgquant::gpu::ElemType;
    use wgquant::gpu::kmeans as k;
    let e = |e: wgquant::Error| e.to_string();
    let n = x.len();
    let stats = cpu::kmeans::cluster_sums(x, codes, bits, mask, Some(old)).map_err(e)?;
    let reference =
        cpu::kmeans::cluster_sums_reference(x, codes, bits, mask, Some(old)).map_err(e)?;
    if !same_bits(&stats.sums, &reference.sums)
        || stats.counts != reference.counts
        || stats.changed != reference.changed
    {
        return Err("CPU parallel and reference passes disagree".into());
    }
    // The fixed-order f32 sums against f64 ones: a bound of 2⁻¹⁶ of Σ|x| covers per-thread
    // sequential runs of ≤ 4096 terms and the two combine steps (each error ≤ terms·ε·Σ|x|).
    let k = 1usize << bits;
    let (mut exact, mut abs_sum) = (vec![0f64; k], 0f64);
    for i in 0..n {
        if mask.is_none_or(|m| pack::get_code(m, i, 1) == 1) {
            exact[pack::get_code(codes, i, bits) as usize] += f64::from(x[i]);
            abs_sum += f64::from(x[i].abs());
        }
    }
    for j in 0..k {
        if (f64::from(stats.sums[j]) - exact[j]).abs() > abs_sum * 2f64.powi(-16) + 1e-6 {
            return Err(format!(
                "cluster {j}: f32 sum {} far from f64 {}",
                stats.sums[j], exact[j]
            ));
        }
    }
    let mut scratch = k::KmeansScratch::new(ctx, n, bits).map_err(e)?;
    // Scratch poisoned too: every record a pass reads must have been written by it.
    for t in [
        &mut scratch.partials,
        &mut scratch.changed,
        &mut scratch.totals,
        &mut scratch.lanes,
        &mut scratch.status,
    ] {
        let shape = t.shape().to_vec();
        *t = common::poisoned(ctx, &shape, ElemType::U32);
    }
    let values = GpuTensor::from_f32(ctx, x, &[n]).map_err(e)?;
    let codes_t = GpuTensor::from_u32(ctx, codes, &[codes.len()]).map_err(e)?;
    let old_t = GpuTensor::from_u32(ctx, old, &[old.len()]).map_err(e)?;
    let mask_t = match mask {
        Some(m) => Some(GpuTensor::from_u32(ctx, m, &[m.len()]).map_err(e)?),
        None => None,
    };
    let start: Vec<f32> = (0..k).map(|j| j as f32 * 1000.0).collect();
    // Outputs poisoned: the finish pass must write every sum and threshold.
    let sums = common::poisoned(ctx, &[k], ElemType::F32);
    let means = GpuTensor::from_f32(ctx, &start, &[k]).map_err(e)?;
    let thresholds = common::poisoned(ctx, &[k], ElemType::F32);
    ctx.run("test", |enc| {
        k::encode_partials(
            ctx,
            enc,
            &values,
            &codes_t,
            mask_t.as_ref(),
            Some(&old_t),
            &scratch,
        )?;
        k::encode_update(ctx, enc, &scratch)?;
        k::encode_finish(ctx, enc, &scratch, &sums, None)?;
        k::encode_finish(ctx, enc, &scratch, &means, Some(&thresholds))
    })
    .map_err(e)?;
    let (gs, gm) = (sums.to_f32(ctx).map_err(e)?, means.to_f32(ctx).map_err(e)?);
    let changed = scratch.status.to_u32(ctx).map_err(e)?[0];
    if u64::from(changed) != stats.changed {
        return Err(format!(
            "changed codes: gpu {changed}, cpu {}",
            stats.changed
        ));
    }
    if let Some(j) = (0..k).find(|&j| gs[j].to_bits() != stats.sums[j].to_bits()) {
        return Err(format!(
            "cluster {j}: sum gpu {} cpu {}",
            gs[j], stats.sums[j]
        ));
    }
    let mut cm = start.clone();
    cpu::kmeans::update_centroids(&mut cm, &stats);
    if let Some(j) = (0..k).find(|&j| gm[j].to_bits() != cm[j].to_bits()) {
        return Err(format!("cluster {j}: mean gpu {} cpu {}", gm[j], cm[j]));
    }
    let want = codebook::midpoint_thresholds(&gm, bits);
    let got = thresholds.to_f32(ctx).map_err(e)?;
    if !same_bits(&got, &want) {
        return Err(format!("thresholds {got:?}, expected {want:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// k-means against brute force
// ---------------------------------------------------------------------------------------------

/// Lloyd's algorithm the obvious way: every kept point to its nearest centroid by scanning all
/// of them (ties to the higher one, as midpoint thresholds do), means in f64.
fn brute_force_lloyd(
    x: &[f32],
    keep: &[bool],
    mut c: Vec<f32>,
    max_iter: u32,
) -> (Vec<f32>, Vec<u32>, u32) {
    let mut codes = vec![u32::MAX; x.len()];
    for it in 1..=max_iter {
        let mut changed = 0;
        for (i, &v) in x.iter().enumerate() {
            // Nearest centroid; on a tie the upper one exactly when v is at or above the
            // midpoint, which is how midpoint thresholds split equal centroids too.
            let mut best = 0;
            for j in 1..c.len() {
                let (d, e) = ((v - c[j]).abs(), (v - c[best]).abs());
                if d < e || (d == e && v >= c[best] * 0.5 + c[j] * 0.5) {
                    best = j;
                }
            }
            if keep[i] && codes[i] != best as u32 {
                changed += 1;
            }
            codes[i] = best as u32;
        }
        let k = c.len();
        let (mut s, mut n) = (vec![0f64; k], vec![0u64; k]);
        for i in 0..x.len() {
            if keep[i] {
                s[codes[i] as usize] += f64::from(x[i]);
                n[codes[i] as usize] += 1;
            }
        }
        for j in 0..k {
            if n[j] > 0 {
                c[j] = (s[j] / n[j] as f64) as f32;
            }
        }
        if it > 1 && changed == 0 {
            return (c, codes, it);
        }
    }
    (c, codes, max_iter)
}

#[test]
fn kmeans_matches_brute_force_on_tiny_inputs() {
    let _serial = serial();
    let ctx = gpu();
    let mut failures = Vec::new();
    let mut cases = 0;
    for n in [1usize, 2, 5, 9, 17, 40] {
        for bits in [1u32, 2, 3] {
            for masked in [false, true] {
                let label = format!("kmeans(n={n}, bits={bits}, mask={masked})");
                let seed = seed_for(&label);
                let x = generate(Dist::Laplace, n, seed);
                let mut r = rng(seed ^ 7);
                let keep: Vec<bool> = (0..n)
                    .map(|i| !masked || i == 0 || r.random_bool(0.6))
                    .collect();
                let mask: Vec<u32> =
                    pack::pack(&keep.iter().map(|&k| u32::from(k)).collect::<Vec<_>>(), 1);
                let mask = masked.then_some(mask);
                let cfg = KmeansConfig {
                    bits,
                    init: KmeansInit::Linear,
                    max_iter: 50,
                    seed: 0,
                };
                let init = kmeans::initial_centroids(&x, mask.as_deref(), bits, cfg.init, 0);
                let (bc, bcodes, biters) = brute_force_lloyd(&x, &keep, init, cfg.max_iter);
                for backend in backends(ctx) {
                    cases += 1;
                    let got = kmeans::cluster(&backend, &x, mask.as_deref(), &cfg).unwrap();
                    let codes = pack::unpack(&got.codes, n, bits);
                    let close = got
                        .centroids
                        .iter()
                        .zip(&bc)
                        .all(|(a, b)| (a - b).abs() <= 1e-5 * b.abs().max(1.0));
                    if !close || codes != bcodes || got.iterations != biters {
                        failures.push(format!(
                            "{label} seed={seed:#x} on {}: centroids {:?} codes {codes:?} after \
                             {} iterations; brute force {bc:?} {bcodes:?} after {biters}",
                            backend.name(),
                            got.centroids,
                            got.iterations
                        ));
                    }
                }
            }
        }
    }
    finish("kmeans_matches_brute_force_on_tiny_inputs", cases, failures);
}

/// Well-separated clusters: Lloyd from the linear start finds the true clusters, and that is
/// the global optimum of 1-D k-means (checked over every split of the sorted points).
#[test]
fn kmeans_finds_the_optimum_of_separated_clusters() {
    let _serial = serial();
    let ctx = gpu();
    let mut r = rng(seed_for("separated"));
    let centres = [-5.0f32, 0.0, 5.0, 10.0];
    let x: Vec<f32> = (0..24)
        .map(|i| centres[i % 4] + r.random_range(-0.5f32..0.5))
        .collect();
    let sse = |c: &[f32], codes: &[u32]| -> f64 {
        x.iter()
            .zip(codes)
            .map(|(&v, &k)| f64::from(v - c[k as usize]).powi(2))
            .sum()
    };
    // Global optimum: best 3 cut points of the sorted data.
    let mut s = x.clone();
    s.sort_by(f32::total_cmp);
    let cost = |a: &[f32]| {
        let m = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        a.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>()
    };
    let mut best = f64::MAX;
    for i in 1..s.len() {
        for j in i + 1..s.len() {
            for k in j + 1..s.len() {
                best = best.min(cost(&s[..i]) + cost(&s[i..j]) + cost(&s[j..k]) + cost(&s[k..]));
            }
        }
    }
    let cfg = KmeansConfig {
        bits: 2,
        init: KmeansInit::Linear,
        max_iter: 30,
        seed: 0,
    };
    for backend in backends(ctx) {
        let got = kmeans::cluster(&backend, &x, None, &cfg).unwrap();
        let codes = pack::unpack(&got.codes, x.len(), 2);
        let e = sse(&got.centroids, &codes);
        assert!(got.converged, "{}", backend.name());
        assert!(
            (e - best).abs() <= 1e-4 * best,
            "{}: SSE {e} vs optimum {best}",
            backend.name()
        );
    }
}

#[test]
fn kmeans_is_deterministic_and_agrees_across_backends() {
    let _serial = serial();
    let Some(ctx) = gpu() else { return };
    let n = 100_003;
    let x = generate(Dist::Laplace, n, seed_for("kmeans determinism"));
    let t = prune::magnitude_threshold(&x, 0.6).unwrap();
    let mask = prune::mask(&Backend::Cpu, &x, t).unwrap();
    for init in [KmeansInit::Linear, KmeansInit::Forgy, KmeansInit::Density] {
        let cfg = KmeansConfig {
            bits: 4,
            init,
            max_iter: 15,
            seed: 11,
        };
        let a = kmeans::cluster(&Backend::Gpu(ctx), &x, Some(&mask), &cfg).unwrap();
        let b = kmeans::cluster(&Backend::Gpu(ctx), &x, Some(&mask), &cfg).unwrap();
        assert_eq!(a, b, "{init:?}: two GPU runs differ");
        assert!(
            a.centroids.windows(2).all(|w| w[0] <= w[1]),
            "{init:?}: unsorted"
        );
        let c = kmeans::cluster(&Backend::Cpu, &x, Some(&mask), &cfg).unwrap();
        assert!(
            same_bits(&a.centroids, &c.centroids),
            "{init:?}: centroids differ"
        );
        assert_eq!(a, c, "{init:?}: GPU and CPU differ");
    }
}

/// One k-means case on both backends: `None` when centroids (bits), codes, iteration counts
/// and convergence agree.
fn kmeans_parity(
    ctx: &Context,
    x: &[f32],
    mask: Option<&[u32]>,
    cfg: &KmeansConfig,
) -> Option<String> {
    let c = kmeans::cluster(&Backend::Cpu, x, mask, cfg).unwrap();
    let g = match kmeans::cluster(&Backend::Gpu(ctx), x, mask, cfg) {
        Ok(g) => g,
        Err(e) => return Some(format!("GPU failed: {e}")),
    };
    if !same_bits(&g.centroids, &c.centroids) {
        let j = (0..c.centroids.len())
            .find(|&j| g.centroids[j].to_bits() != c.centroids[j].to_bits())
            .unwrap_or(0);
        return Some(format!(
            "centroid {j}: gpu {} cpu {} (after {} / {} iterations)",
            g.centroids.get(j).copied().unwrap_or(f32::NAN),
            c.centroids[j],
            g.iterations,
            c.iterations
        ));
    }
    if g.codes != c.codes {
        let w = (0..c.codes.len())
            .find(|&w| g.codes[w] != c.codes[w])
            .unwrap_or(0);
        return Some(format!("codes differ from word {w}"));
    }
    if (g.iterations, g.converged) != (c.iterations, c.converged) {
        return Some(format!(
            "iterations gpu {} ({}) cpu {} ({})",
            g.iterations, g.converged, c.iterations, c.converged
        ));
    }
    None
}

/// `kmeans::cluster` gives the same bits on both backends: awkward sizes, every init, with
/// and without a mask, bits 1..=8; large sizes on lowered limits too (split workgroups,
/// record windows, lane batches).
#[test]
fn kmeans_is_bit_identical_on_both_backends() {
    let _serial = serial();
    let Some(ctx) = gpu() else { return };
    let lowered = lowered(ctx);
    let mut failures = Vec::new();
    let mut cases = 0;
    let big = (1usize << 20) + 3;
    for n in [1usize, 3, 33, 1757, 70_001, big] {
        for bits in 1..=8u32 {
            // The largest size on a few widths only: the suite stays fast.
            if n == big && ![1, 4, 8].contains(&bits) {
                continue;
            }
            for init in [KmeansInit::Linear, KmeansInit::Forgy, KmeansInit::Density] {
                for masked in [false, true] {
                    let label = format!("kmeans(n={n}, bits={bits}, init={init:?}, mask={masked})");
                    let seed = seed_for(&label);
                    let x = generate(Dist::Laplace, n, seed);
                    let mask = masked.then(|| {
                        let t = prune::magnitude_threshold(&x, 0.5).unwrap();
                        prune::mask(&Backend::Cpu, &x, t).unwrap()
                    });
                    let cfg = KmeansConfig {
                        bits,
                        init,
                        max_iter: if n == big { 5 } else { 12 },
                        seed,
                    };
                    let mut devices = vec![("device", ctx)];
                    if n >= 70_001 && init == KmeansInit::Linear && !(n == big && masked) {
                        for (name, c, max_bits) in &lowered {
                            if bits <= *max_bits {
                                devices.push((name, c));
                            }
                        }
                    }
                    for (name, c) in devices {
                        cases += 1;
                        if let Some(e) = kmeans_parity(c, &x, mask.as_deref(), &cfg) {
                            failures.push(format!("{label} on {name} seed={seed:#x}: {e}"));
                        }
                    }
                }
            }
        }
    }
    // Huge weights go through the power-of-two prescaling on both backends alike.
    let x: Vec<f32> = generate(Dist::Normal, 5000, seed_for("huge"))
        .iter()
        .map(|v| v * 3e37)
        .collect();
    for bits in [2u32, 6] {
        cases += 1;
        let cfg = KmeansConfig {
            bits,
            init: KmeansInit::Linear,
            max_iter: 20,
            seed: 0,
        };
        if let Some(e) = kmeans_parity(ctx, &x, None, &cfg) {
            failures.push(format!("kmeans(huge weights, bits={bits}): {e}"));
        }
    }
    finish("kmeans_is_bit_identical_on_both_backends", cases, failures);
}

#[test]
fn centroid_gradient_is_the_per_cluster_sum() {
    let _serial = serial();
    let ctx = gpu();
    let n = 10_007;
    let bits = 3;
    let mut r = rng(seed_for("centroid gradient"));
    let grads = generate(Dist::Normal, n, seed_for("grads"));
    let codes: Vec<u32> = (0..n).map(|_| r.random_range(0..8)).collect();
    let keep: Vec<u32> = (0..n).map(|_| u32::from(r.random_bool(0.5))).collect();
    let (packed, mask) = (pack::pack(&codes, bits), pack::pack(&keep, 1));
    let mut want = [0f64; 8];
    for i in 0..n {
        if keep[i] == 1 {
            want[codes[i] as usize] += f64::from(grads[i]);
        }
    }
    for backend in backends(ctx) {
        let got = kmeans::centroid_gradient(&backend, &grads, &packed, bits, Some(&mask)).unwrap();
        for j in 0..8 {
            assert!(
                (f64::from(got[j]) - want[j]).abs() < 1e-3,
                "{}: cluster {j}: {} vs {}",
                backend.name(),
                got[j],
                want[j]
            );
        }
    }
}

/// The centroid gradient sums in the same order on both backends: the same bits, on the
/// device's limits and lowered ones, for every width.
#[test]
fn centroid_gradient_is_bit_identical_on_both_backends() {
    let _serial = serial();
    let Some(ctx) = gpu() else { return };
    let lowered = lowered(ctx);
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, bits) in [(3usize, 1u32), (1757, 5), (200_003, 2), (300_007, 8)] {
        let label = format!("centroid_gradient(n={n}, bits={bits})");
        let seed = seed_for(&label);
        let grads = generate(Dist::Normal, n, seed);
        let mut r = rng(seed ^ 3);
        let codes: Vec<u32> = (0..n).map(|_| r.random_range(0..1u32 << bits)).collect();
        let keep: Vec<u32> = (0..n).map(|_| u32::from(r.random_bool(0.5))).collect();
        let (packed, mask) = (pack::pack(&codes, bits), pack::pack(&keep, 1));
        let want =
            kmeans::centroid_gradient(&Backend::Cpu, &grads, &packed, bits, Some(&mask)).unwrap();
        let mut devices = vec![("device", ctx)];
        for (name, c, max_bits) in &lowered {
            if bits <= *max_bits && n > 1757 {
                devices.push((name, c));
            }
        }
        for (name, c) in devices {
            cases += 1;
            let got =
                kmeans::centroid_gradient(&Backend::Gpu(c), &grads, &packed, bits, Some(&mask))
                    .unwrap();
            if !same_bits(&got, &want) {
                failures.push(format!("{label} on {name}: gpu {got:?} cpu {want:?}"));
            }
        }
    }
    finish(
        "centroid_gradient_is_bit_identical_on_both_backends",
        cases,
        failures,
    );
}

/// `wgquant quantize --scheme dc` writes the same file with `--device cpu` and `--device gpu`.
#[test]
fn dc_cli_writes_the_same_file_on_both_devices() {
    use std::borrow::Cow;
    use wgquant::checkpoint::file::{OutTensor, write_atomic};
    let _serial = serial();
    let devices = common::cli_devices();
    if devices.len() < 2 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    let tensor = |shape: &[usize], label: &str| OutTensor {
        dtype: safetensors::Dtype::F32,
        shape: shape.to_vec(),
        data: Cow::Owned(
            generate(Dist::Laplace, shape.iter().product(), seed_for(label))
                .iter()
                .flat_map(|v| (v * 0.02).to_le_bytes())
                .collect(),
        ),
    };
    let tensors = vec![
        ("a.weight".to_string(), tensor(&[320, 700], "dc cli a")),
        ("b.weight".to_string(), tensor(&[33, 57], "dc cli b")),
    ];
    write_atomic(&model, &tensors, Default::default()).unwrap();
    for (bits, init) in [("5", "linear"), ("3", "density"), ("8", "forgy")] {
        let mut files = Vec::new();
        for device in &devices {
            let out = dir.path().join(format!("dc{bits}-{device}.safetensors"));
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_wgquant"))
                .args([
                    "quantize",
                    model.to_str().unwrap(),
                    "-o",
                    out.to_str().unwrap(),
                ])
                .args(["--scheme", "dc", "--sparsity", "0.6", "--bits", bits])
                .args(["--kmeans-init", init, "--device", device])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "dc bits {bits} on {device}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            files.push(std::fs::read(&out).unwrap());
        }
        assert!(
            files[0] == files[1],
            "dc(bits={bits}, init={init}): --device cpu and --device gpu write different files"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The pipeline and its storage
// ---------------------------------------------------------------------------------------------

#[test]
fn dc_tensor_survives_sparse_storage_exactly() {
    let _serial = serial();
    let ctx = gpu();
    let shape = [96usize, 257];
    let n = shape[0] * shape[1];
    let x = generate(Dist::Laplace, n, seed_for("dc storage"));
    for backend in backends(ctx) {
        for (sparsity, bits, index_bits) in
            [(0.9f32, 4u32, 3u32), (0.5, 5, 5), (0.0, 2, 1), (1.0, 3, 4)]
        {
            let label = format!(
                "dc(S={sparsity}, B={bits}, idx={index_bits}) on {}",
                backend.name()
            );
            let cfg = DcConfig {
                index_bits,
                ..DcConfig::new(sparsity, bits)
            };
            let qt = deep_compression::quantize(&backend, "w", &x, &shape, &cfg).unwrap();
            let mask = qt.mask.clone().unwrap();
            let y = quant::dequantize(&backend, &qt).unwrap();
            let threshold = prune::magnitude_threshold(&x, sparsity).unwrap();
            for i in 0..n {
                let kept = pack::get_code(&mask, i, 1) == 1;
                assert_eq!(kept, x[i].abs() > threshold, "{label}: mask {i}");
                assert!(
                    kept || y[i] == 0.0,
                    "{label}: pruned element {i} decodes to {}",
                    y[i]
                );
                assert!(
                    kept || pack::get_code(&qt.codes, i, bits) == 0,
                    "{label}: pruned code"
                );
            }
            let (rec, parts) = disk::to_parts(
                "w",
                &qt,
                "deep_compression",
                safetensors::Dtype::F32,
                None,
                Storage::SparseHuffman { index_bits },
            )
            .unwrap();
            assert_eq!(rec.index_bits, Some(index_bits));
            assert!(
                parts
                    .iter()
                    .all(|p| !p.name.ends_with(disk::CODES) && !p.name.ends_with(disk::MASK)),
                "{label}: dense parts written"
            );
            let get = |name: &str| {
                parts.iter().find(|p| p.name == name).map(|p| StoredPart {
                    dtype: p.dtype,
                    shape: p.shape.clone(),
                    data: &p.data,
                })
            };
            let back = disk::from_parts("w", &rec, get).unwrap();
            assert_eq!(back, qt, "{label}: the stored tensor differs");
            let stored: usize = parts.iter().map(|p| p.data.len()).sum();
            let sizes = StageSizes::of(&qt, index_bits).unwrap();
            let Encoding::Codebook { levels, .. } = &qt.encoding else {
                unreachable!()
            };
            assert_eq!(
                sizes.huffman_bits,
                (stored * 8) as u64,
                "{label}: Huffman stage is what is stored"
            );
            assert_eq!(sizes.kept as usize, prune::kept(&mask));
            assert_eq!(sizes.dense_bits, n as u64 * 32);
            assert!(levels.len() == 1 << bits);
            let [p, q, h] = sizes.ratios();
            // (With everything pruned only fillers and the codebook are left.)
            if sparsity < 1.0 {
                assert!(
                    q > p,
                    "{label}: quantization must shrink the pruned form ({p} → {q})"
                );
                assert!(h > q * 0.9, "{label}: Huffman coding lost ({q} → {h})");
            }
        }
    }
}

#[test]
fn dc_settings_are_checked() {
    let x = vec![0.5f32; 64];
    for cfg in [
        DcConfig::new(1.5, 4),
        DcConfig::new(-0.1, 4),
        DcConfig::new(0.5, 0),
        DcConfig::new(0.5, 9),
        DcConfig {
            index_bits: 17,
            ..DcConfig::new(0.5, 4)
        },
        DcConfig {
            max_iter: 0,
            ..DcConfig::new(0.5, 4)
        },
    ] {
        assert!(
            deep_compression::quantize(&Backend::Cpu, "w", &x, &[64], &cfg).is_err(),
            "{cfg:?}"
        );
    }
    let mut nan = x.clone();
    nan[9] = f32::INFINITY;
    assert!(matches!(
        deep_compression::quantize(&Backend::Cpu, "w", &nan, &[64], &DcConfig::new(0.5, 4)),
        Err(wgquant::Error::NonFinite { index: 9, .. })
    ));
}

/// The CPU sums before the fixed f32 order (commit 46d10b3): chunks of 2^16 elements summed
/// in f64 in parallel, the chunks merged in order. Kept only to time against.
fn f64_chunk_sums(x: &[f32], codes: &[u32], bits: u32) -> (Vec<f64>, Vec<u64>) {
    use rayon::prelude::*;
    const TASK: usize = 1 << 16;
    let k = 1usize << bits;
    let parts: Vec<(Vec<f64>, Vec<u64>)> = (0..x.len().div_ceil(TASK))
        .into_par_iter()
        .map(|t| {
            let (mut s, mut c) = (vec![0f64; k], vec![0u64; k]);
            for i in t * TASK..((t + 1) * TASK).min(x.len()) {
                let code = pack::get_code(codes, i, bits) as usize;
                s[code] += f64::from(x[i]);
                c[code] += 1;
            }
            (s, c)
        })
        .collect();
    parts.into_iter().fold(
        (vec![0f64; k], vec![0u64; k]),
        |(mut s, mut c), (ps, pc)| {
            s.iter_mut().zip(&ps).for_each(|(a, b)| *a += b);
            c.iter_mut().zip(&pc).for_each(|(a, b)| *a += b);
            (s, c)
        },
    )
}

/// The CPU k-means sums at 16M weights and 16 centroids, the fixed-order f32 pass against the
/// former f64 chunks, interleaved (best of 9 each), and a whole iteration (assignment, sums,
/// update). Run with `--ignored --nocapture`.
#[test]
#[ignore = "timing, not a check"]
fn kmeans_cpu_iteration_timing() {
    let (n, bits) = (16usize << 20, 4u32);
    let x = generate(Dist::Laplace, n, seed_for("kmeans timing"));
    let init = kmeans::initial_centroids(&x, None, bits, KmeansInit::Linear, 0);
    let thresholds = codebook::midpoint_thresholds(&init, bits);
    let seg = codebook::segment(n, n, bits);
    let mut codes = vec![0u32; pack::packed_words(n, bits)];
    let time = |f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    let mut best = [f64::INFINITY; 3];
    for _ in 0..9 {
        let it = time(&mut || {
            cpu::codebook_assign::codebook_assign(&x, &mut codes, &thresholds, &[seg]).unwrap();
            let stats = cpu::kmeans::cluster_sums(&x, &codes, bits, None, None).unwrap();
            let mut c = init.clone();
            cpu::kmeans::update_centroids(&mut c, &stats);
        });
        let new = time(&mut || {
            std::hint::black_box(cpu::kmeans::cluster_sums(&x, &codes, bits, None, None).unwrap());
        });
        let old = time(&mut || {
            std::hint::black_box(f64_chunk_sums(&x, &codes, bits));
        });
        for (b, t) in best.iter_mut().zip([it, new, old]) {
            *b = b.min(t);
        }
    }
    common::say(&format!(
        "k-means CPU, 16M weights, 16 centroids, {} threads (best of 9): sums f32 fixed order \
         {:.1} ms, f64 chunks {:.1} ms; iteration {:.1} ms",
        rayon::current_num_threads(),
        best[1],
        best[2],
        best[0]
    ));
}
