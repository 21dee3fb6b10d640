//! Every affine kernel (fake_quant out of place and in place, quantize_pack, dequantize) run on
//! the GPU and on its CPU twin over fresh seeded data of awkward sizes, granularities, modes
//! and bit widths, compared at the three quantizer levels; batched segment tables; chunked
//! binding windows and folded grids; one tensor larger than a storage binding; bad arguments.

mod common;

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};

use common::*;
use wgquant::affine::{AffineMode, AffineScheme, AffineSegment, Layout};
use wgquant::cpu;
use wgquant::gpu::{self, Context, ElemType, GpuTensor, WorkLimits};

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// How elements share (scale, zero point).
#[derive(Clone, Copy, Debug)]
enum Gran {
    /// One pair for the whole tensor.
    Tensor,
    /// One pair per row (axis 0).
    Channel,
    /// One pair per `G` consecutive elements (the last group may be shorter).
    Group(usize),
}

/// One test case: a 2-D shape, a granularity, a scheme and a distribution.
#[derive(Clone, Copy, Debug)]
struct Case {
    rows: usize,
    cols: usize,
    gran: Gran,
    bits: u32,
    mode: AffineMode,
    dist: Dist,
}

/// A case's data: input, per-group parameters and its one segment.
struct Data {
    x: Vec<f32>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    seg: AffineSegment,
}

impl Data {
    fn quantizer(&self) -> Quantizer<'_> {
        Quantizer {
            seg: self.seg,
            scale: &self.scale,
            zero: &self.zero,
        }
    }
}

impl Case {
    fn n(&self) -> usize {
        self.rows * self.cols
    }

    fn group_len(&self) -> usize {
        match self.gran {
            Gran::Tensor => self.n(),
            Gran::Channel => self.cols,
            Gran::Group(g) => g,
        }
    }

    fn scheme(&self) -> AffineScheme {
        AffineScheme::new(self.bits, self.mode).expect("cases only hold valid schemes")
    }

    /// The parameters that decide the data (shared by every op run on the case).
    fn key(&self) -> String {
        let group = match self.gran {
            Gran::Tensor => "tensor".to_string(),
            Gran::Channel => format!("channel({})", self.cols),
            Gran::Group(g) => format!("group({g})"),
        };
        format!(
            "n={}, shape={}x{}, group={group}, bits={}, mode={}, dist={}",
            self.n(),
            self.rows,
            self.cols,
            self.bits,
            mode_name(self.mode),
            self.dist.name()
        )
    }

    fn seed(&self) -> u64 {
        seed_for(&self.key())
    }

    /// `OP(params, seed=…)`, printed by every failure.
    fn label(&self, op: &str) -> String {
        format!("{op}({}, seed={:#x})", self.key(), self.seed())
    }

    /// Guard words before GPU outputs: 0, 5 or 10, so outputs start both on and off a
    /// 256-byte boundary.
    fn lead(&self) -> usize {
        (self.seed() % 3) as usize * 5
    }

    fn data(&self) -> Data {
        let x = generate(self.dist, self.n(), self.seed());
        let (scale, zero) = group_params(&x, self.group_len(), self.scheme());
        Data {
            seg: whole_segment(self.n(), self.group_len(), self.scheme()),
            x,
            scale,
            zero,
        }
    }
}

/// Sizes 1, 3, 7, 33, 255, 257, 1757 and per-group shapes whose rows hold whole groups, each
/// with the granularities it supports. Flat `Group` on a length that is not a multiple of
/// the group gives a short last group.
fn small_shapes() -> Vec<(usize, usize, Gran)> {
    use Gran::*;
    vec![
        (1, 1, Tensor),
        (1, 1, Group(32)),
        (3, 1, Tensor),
        (3, 1, Channel),
        (1, 3, Group(32)),
        (7, 1, Channel),
        (1, 7, Tensor),
        (3, 11, Channel),
        (15, 17, Tensor),
        (15, 17, Channel),
        (1, 255, Group(32)),
        (1, 257, Tensor),
        (257, 1, Channel),
        (1, 257, Group(32)),
        (7, 251, Tensor),
        (7, 251, Channel),
        (1, 1757, Group(64)),
        (9, 96, Group(32)),
        (5, 192, Group(64)),
        (3, 384, Group(128)),
    ]
}

/// 2^20 + 3 = 1141 · 919 elements, and a per-group shape of about that size.
fn large_shapes() -> Vec<(usize, usize, Gran)> {
    use Gran::*;
    vec![
        (1, (1 << 20) + 3, Tensor),
        (1141, 919, Channel),
        (1, (1 << 20) + 3, Group(128)),
        (4097, 256, Group(64)),
    ]
}

/// Every small shape × mode × bit width, the distribution rotating; on the large shapes two
/// widths each from `bits_large`, the mode rotating too.
fn cases(bits_small: &[u32], bits_large: &[u32], large: bool) -> Vec<Case> {
    let mut out = Vec::new();
    let mut k = 0usize;
    for (rows, cols, gran) in small_shapes() {
        for mode in MODES {
            for &bits in bits_small {
                if AffineScheme::new(bits, mode).is_err() {
                    continue;
                }
                out.push(Case {
                    rows,
                    cols,
                    gran,
                    bits,
                    mode,
                    dist: Dist::ALL[k % Dist::ALL.len()],
                });
                k += 1;
            }
        }
    }
    if large {
        // Two widths per large shape, walking through `bits_large` so that together the
        // shapes cover every width of it.
        let mut w = 0usize;
        for (rows, cols, gran) in large_shapes() {
            for _ in 0..2 {
                let bits = bits_large[w % bits_large.len()];
                w += 1;
                let mode = MODES[k % MODES.len()];
                if AffineScheme::new(bits, mode).is_err() {
                    continue;
                }
                out.push(Case {
                    rows,
                    cols,
                    gran,
                    bits,
                    mode,
                    dist: Dist::ALL[k % Dist::ALL.len()],
                });
                k += 1;
            }
        }
    }
    out
}

const FAKE_QUANT_BITS: [u32; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const FAKE_QUANT_BITS_LARGE: [u32; 6] = [1, 3, 4, 5, 8, 16];
const PACK_BITS: [u32; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 12, 16];
const PACK_BITS_LARGE: [u32; 5] = [2, 3, 4, 5, 8];

// ---------------------------------------------------------------------------------------------
// Running an op on either backend
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    FakeQuant,
    FakeQuantInPlace,
    QuantizePack,
    Dequantize,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::FakeQuant => "fake_quant",
            Op::FakeQuantInPlace => "fake_quant_inplace",
            Op::QuantizePack => "quantize_pack",
            Op::Dequantize => "dequantize",
        }
    }

    fn layouts(self) -> (Layout, Layout) {
        match self {
            Op::FakeQuant | Op::FakeQuantInPlace => (Layout::Elements, Layout::Elements),
            Op::QuantizePack => (Layout::Elements, Layout::Packed),
            Op::Dequantize => (Layout::Packed, Layout::Elements),
        }
    }

    fn dtype(layout: Layout) -> ElemType {
        match layout {
            Layout::Elements => ElemType::F32,
            Layout::Packed => ElemType::U32,
        }
    }
}

/// The operands of one call: the input as raw words (f32 bits or packed codes), the output
/// length in units, parameters and the segment table.
struct Call<'a> {
    input: &'a [u32],
    out_len: usize,
    scale: &'a [f32],
    zero: &'a [i32],
    segs: &'a [AffineSegment],
}

impl Call<'_> {
    /// Output unit ranges the segments write, cut to the output (bad tables may reach past).
    fn written(&self, op: Op) -> Vec<Range<usize>> {
        let dst = op.layouts().1;
        self.segs
            .iter()
            .filter(|s| s.len > 0)
            .map(|s| {
                let a = (s.dst as usize).min(self.out_len);
                let b = (s.dst as usize + dst.span(s, u64::from(s.len)) as usize).min(self.out_len);
                a..b
            })
            .collect()
    }
}

fn f32_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `op` on the CPU twin; the output starts as poison outside the segments, like the
/// GPU's, so both sides can be compared whole.
fn cpu_run(op: Op, call: &Call<'_>) -> wgquant::Result<Vec<u32>> {
    let (s, z, segs) = (call.scale, call.zero, call.segs);
    match op {
        Op::FakeQuant => {
            let x: &[f32] = bytemuck::cast_slice(call.input);
            let mut y = vec![f32::from_bits(POISON); call.out_len];
            cpu::fake_quant::fake_quant(x, &mut y, s, z, segs)?;
            Ok(f32_bits(&y))
        }
        Op::FakeQuantInPlace => {
            let mut y = inplace_start(op, call);
            cpu::fake_quant::fake_quant_inplace(bytemuck::cast_slice_mut(&mut y), s, z, segs)?;
            Ok(y)
        }
        Op::QuantizePack => {
            let x: &[f32] = bytemuck::cast_slice(call.input);
            let mut w = vec![POISON; call.out_len];
            cpu::quantize_pack::quantize_pack(x, &mut w, s, z, segs)?;
            Ok(w)
        }
        Op::Dequantize => {
            let mut y = vec![f32::from_bits(POISON); call.out_len];
            cpu::dequantize::dequantize(call.input, &mut y, s, z, segs)?;
            Ok(f32_bits(&y))
        }
    }
}

/// For in place: the input inside the segments, poison everywhere else.
fn inplace_start(op: Op, call: &Call<'_>) -> Vec<u32> {
    let mut y = vec![POISON; call.out_len];
    for r in call.written(op) {
        let r = r.start..r.end.min(call.input.len());
        y[r.clone()].copy_from_slice(&call.input[r]);
    }
    y
}

/// Runs `op` on the GPU into a guarded, poisoned output `lead` words into its buffer, then
/// checks the poison (unwritten elements, overwritten gaps and sentinels) and returns the
/// output's words.
fn gpu_run_with(
    ctx: &Context,
    op: Op,
    label: &str,
    call: &Call<'_>,
    lead: usize,
    expected: Option<&[u32]>,
) -> Result<Vec<u32>, String> {
    let err = |e: wgquant::Error| format!("{label}: {e}");
    let (src_l, dst_l) = op.layouts();
    let scale = GpuTensor::from_f32(ctx, call.scale, &[call.scale.len()]).map_err(err)?;
    let zero = GpuTensor::from_i32(ctx, call.zero, &[call.zero.len()]).map_err(err)?;
    let out = if op == Op::FakeQuantInPlace {
        let start = inplace_start(op, call);
        Guarded::with_data(ctx, lead, bytemuck::cast_slice(&start)).map_err(err)?
    } else {
        Guarded::new(ctx, lead, call.out_len, Op::dtype(dst_l)).map_err(err)?
    };
    let input = if op == Op::FakeQuantInPlace {
        out.view.clone()
    } else {
        GpuTensor::upload(ctx, call.input, &[call.input.len()], Op::dtype(src_l)).map_err(err)?
    };
    let (segs, v) = (call.segs, &out.view);
    match op {
        Op::FakeQuant | Op::FakeQuantInPlace => {
            gpu::fake_quant::fake_quant(ctx, &input, v, &scale, &zero, segs)
        }
        Op::QuantizePack => gpu::quantize_pack::quantize_pack(ctx, &input, v, &scale, &zero, segs),
        Op::Dequantize => gpu::dequantize::dequantize(ctx, &input, v, &scale, &zero, segs),
    }
    .map_err(err)?;
    out.check(ctx, label, &call.written(op), expected)
}

/// Compares a GPU output with the CPU's, segment by segment, at level 1: fake-quantized
/// values and packed codes equal except at near-ties, dequantized values bit-exact.
fn compare_level1(
    op: Op,
    label: &str,
    call: &Call<'_>,
    x: &[f32],
    expected: &[u32],
    got: &[u32],
) -> Check {
    let (src_l, dst_l) = op.layouts();
    for (k, seg) in call.segs.iter().enumerate() {
        let [s, d, _] = seg.ranges(src_l, dst_l);
        let d = d.0 as usize..d.1 as usize;
        let q = Quantizer {
            seg: *seg,
            scale: call.scale,
            zero: call.zero,
        };
        let label = if call.segs.len() > 1 {
            format!("{label} segment {k} {seg:?}")
        } else {
            label.to_string()
        };
        match op {
            Op::FakeQuant | Op::FakeQuantInPlace => {
                let xs = &x[s.0 as usize..s.1 as usize];
                check_fake_quant_codes(
                    &label,
                    &q,
                    xs,
                    &as_f32(&expected[d.clone()]),
                    &as_f32(&got[d]),
                )?
            }
            Op::QuantizePack => {
                let xs = &x[s.0 as usize..s.1 as usize];
                check_packed_codes(&label, &q, xs, &expected[d.clone()], &got[d])?
            }
            Op::Dequantize => check_bits_equal(
                &label,
                "dequantized",
                &as_f32(&expected[d.clone()]),
                &as_f32(&got[d]),
            )?,
        }
    }
    Ok(())
}

/// Levels 2 and 3 of fake-quantized (or dequantized) values, segment by segment.
fn check_levels(
    label: &str,
    call: &Call<'_>,
    x: &[f32],
    xhat: &[f32],
    x_layout: (usize, Layout),
    dist: Dist,
) -> Check {
    for seg in call.segs {
        let src = match x_layout.1 {
            Layout::Elements => seg.src as usize,
            Layout::Packed => x_layout.0,
        };
        let xs = &x[src..src + seg.len as usize];
        let ys = &xhat[seg.dst as usize..seg.dst as usize + seg.len as usize];
        let q = Quantizer {
            seg: *seg,
            scale: call.scale,
            zero: call.zero,
        };
        check_quantizer_levels(label, &q, xs, ys, dist)?;
    }
    Ok(())
}

/// The GPU context or the end of the test (skipped without an adapter, unless `CI`).
macro_rules! gpu_or_skip {
    () => {
        match common::gpu() {
            Some(ctx) => ctx,
            None => return,
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Single-segment cases: GPU vs CPU at three levels
// ---------------------------------------------------------------------------------------------

/// Runs `op` on one case on both backends and compares at all three levels.
fn run_case(ctx: &Context, op: Op, case: &Case) -> Check {
    let label = case.label(op.name());
    let d = case.data();
    let err = |e: wgquant::Error| format!("{label}: CPU: {e}");
    let x_bits = f32_bits(&d.x);
    let segs = [d.seg];
    let n = case.n();
    match op {
        Op::FakeQuant | Op::FakeQuantInPlace => {
            let call = Call {
                input: &x_bits,
                out_len: n,
                scale: &d.scale,
                zero: &d.zero,
                segs: &segs,
            };
            let expected = cpu_run(op, &call).map_err(err)?;
            let got = gpu_run_with(ctx, op, &label, &call, case.lead(), None)?;
            compare_level1(op, &label, &call, &d.x, &expected, &got)?;
            let q = d.quantizer();
            check_quantizer_levels(
                &format!("{label} [GPU]"),
                &q,
                &d.x,
                &as_f32(&got),
                case.dist,
            )?;
            check_quantizer_levels(
                &format!("{label} [CPU]"),
                &q,
                &d.x,
                &as_f32(&expected),
                case.dist,
            )?;
            if op == Op::FakeQuantInPlace {
                // The CPU's in-place form equals its out-of-place form.
                let out_of_place = cpu_run(Op::FakeQuant, &call).map_err(err)?;
                check_words_equal(
                    &label,
                    "CPU in place vs out of place",
                    &out_of_place,
                    &expected,
                )?;
            }
        }
        Op::QuantizePack => {
            let words = d.seg.packed_words();
            let call = Call {
                input: &x_bits,
                out_len: words,
                scale: &d.scale,
                zero: &d.zero,
                segs: &segs,
            };
            let expected = cpu_run(op, &call).map_err(err)?;
            let got = gpu_run_with(ctx, op, &label, &call, case.lead(), Some(&expected))?;
            compare_level1(op, &label, &call, &d.x, &expected, &got)?;
        }
        Op::Dequantize => {
            // Both backends decode the same codes (the CPU's), so the values must be bit-exact.
            let words = d.seg.packed_words();
            let pack_call = Call {
                input: &x_bits,
                out_len: words,
                scale: &d.scale,
                zero: &d.zero,
                segs: &segs,
            };
            let codes = cpu_run(Op::QuantizePack, &pack_call).map_err(err)?;
            let call = Call {
                input: &codes,
                out_len: n,
                ..pack_call
            };
            let expected = cpu_run(op, &call).map_err(err)?;
            let got = gpu_run_with(ctx, op, &label, &call, case.lead(), None)?;
            compare_level1(op, &label, &call, &d.x, &expected, &got)?;
            let q = d.quantizer();
            check_quantizer_levels(
                &format!("{label} [GPU]"),
                &q,
                &d.x,
                &as_f32(&got),
                case.dist,
            )?;
        }
    }
    Ok(())
}

/// Runs every case of `op`, collecting failures.
fn run_all(test: &str, op: Op, cases: &[Case]) {
    let ctx = gpu_or_skip!();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(ctx, op, c).err())
        .collect();
    finish(test, cases.len(), failures);
}

#[test]
fn fake_quant_matches_cpu() {
    run_all(
        "fake_quant_matches_cpu",
        Op::FakeQuant,
        &cases(&FAKE_QUANT_BITS, &FAKE_QUANT_BITS_LARGE, true),
    );
}

#[test]
fn fake_quant_in_place_matches_cpu() {
    run_all(
        "fake_quant_in_place_matches_cpu",
        Op::FakeQuantInPlace,
        &cases(&FAKE_QUANT_BITS, &[2, 8], true),
    );
}

#[test]
fn quantize_pack_matches_cpu() {
    run_all(
        "quantize_pack_matches_cpu",
        Op::QuantizePack,
        &cases(&PACK_BITS, &PACK_BITS_LARGE, true),
    );
}

#[test]
fn dequantize_matches_cpu() {
    run_all(
        "dequantize_matches_cpu",
        Op::Dequantize,
        &cases(&PACK_BITS, &PACK_BITS_LARGE, true),
    );
}

/// dequantize(quantize_pack(x)) equals fake_quant(x) bit for bit, on each backend separately.
#[test]
fn pack_dequant_round_trip_equals_fake_quant() {
    let ctx = gpu_or_skip!();
    let all = cases(&PACK_BITS, &[3, 8], true);
    let mut failures = Vec::new();
    for case in &all {
        let label = case.label("round_trip");
        let r = (|| -> Check {
            let d = case.data();
            let x_bits = f32_bits(&d.x);
            let segs = [d.seg];
            let fq = Call {
                input: &x_bits,
                out_len: case.n(),
                scale: &d.scale,
                zero: &d.zero,
                segs: &segs,
            };
            let pk = Call {
                out_len: d.seg.packed_words(),
                ..fq
            };
            let cpu_err = |e: wgquant::Error| format!("{label}: CPU: {e}");
            // CPU.
            let cpu_fq = cpu_run(Op::FakeQuant, &fq).map_err(cpu_err)?;
            let cpu_codes = cpu_run(Op::QuantizePack, &pk).map_err(cpu_err)?;
            let dq = Call {
                input: &cpu_codes,
                ..fq
            };
            let cpu_rt = cpu_run(Op::Dequantize, &dq).map_err(cpu_err)?;
            check_bits_equal(
                &format!("{label} [CPU]"),
                "dequantize(quantize_pack(x)) vs fake_quant(x)",
                &as_f32(&cpu_fq),
                &as_f32(&cpu_rt),
            )?;
            // GPU, on its own codes.
            let lead = case.lead();
            let gpu_fq = gpu_run_with(ctx, Op::FakeQuant, &label, &fq, lead, None)?;
            let gpu_codes = gpu_run_with(ctx, Op::QuantizePack, &label, &pk, lead, None)?;
            let dq = Call {
                input: &gpu_codes,
                ..fq
            };
            let gpu_rt = gpu_run_with(ctx, Op::Dequantize, &label, &dq, lead, None)?;
            check_bits_equal(
                &format!("{label} [GPU]"),
                "dequantize(quantize_pack(x)) vs fake_quant(x)",
                &as_f32(&gpu_fq),
                &as_f32(&gpu_rt),
            )
        })();
        failures.extend(r.err());
    }
    finish(
        "pack_dequant_round_trip_equals_fake_quant",
        all.len(),
        failures,
    );
}

/// Exact ties k + ½ round half to even on the GPU too (DESIGN.md: "half-to-even
/// everywhere"), bit for bit with no tie allowance: with power-of-two scales x/s is exact under
/// any division a GPU implements (the reciprocal of a power of two is exact), so here the
/// tie tolerance of level 1 must not be needed.
#[test]
fn exact_ties_round_half_to_even() {
    let ctx = gpu_or_skip!();
    let scales = [0.125f32, 2.0, 1.0 / 1024.0, 64.0];
    let mut failures = Vec::new();
    let mut count = 0;
    for mode in MODES {
        for bits in [1u32, 2, 3, 4, 5, 8, 12, 16] {
            let Ok(scheme) = AffineScheme::new(bits, mode) else {
                continue;
            };
            let z = if scheme.is_symmetric() {
                0
            } else {
                scheme.qmax() / 3
            };
            // Every tie from three steps below the range to three above, in every group.
            let ks: Vec<i32> = (scheme.qmin() - z - 3..=scheme.qmax() - z + 3).collect();
            let g = ks.len();
            let x: Vec<f32> = scales
                .iter()
                .flat_map(|&s| ks.iter().map(move |&k| (k as f32 + 0.5) * s))
                .collect();
            let zero = vec![z; scales.len()];
            let seg = whole_segment(x.len(), g, scheme);
            let x_bits = f32_bits(&x);
            let segs = [seg];
            let label = format!(
                "exact_ties(n={}, group={g}, bits={bits}, mode={}, z={z}, scales={scales:?})",
                x.len(),
                mode_name(mode)
            );
            for op in [Op::FakeQuant, Op::QuantizePack] {
                count += 1;
                let call = Call {
                    input: &x_bits,
                    out_len: if op == Op::FakeQuant {
                        x.len()
                    } else {
                        seg.packed_words()
                    },
                    scale: &scales,
                    zero: &zero,
                    segs: &segs,
                };
                let label = format!("{} {label}", op.name());
                let r = cpu_run(op, &call)
                    .map_err(|e| format!("{label}: CPU: {e}"))
                    .and_then(|expected| {
                        let got = gpu_run_with(ctx, op, &label, &call, 0, Some(&expected))?;
                        if op == Op::FakeQuant {
                            check_bits_equal(&label, "output", &as_f32(&expected), &as_f32(&got))
                        } else {
                            check_words_equal(&label, "codes", &expected, &got)
                        }
                    });
                failures.extend(r.err());
            }
        }
    }
    finish("exact_ties_round_half_to_even", count, failures);
}

// ---------------------------------------------------------------------------------------------
// CPU: fast path vs plain reference
// ---------------------------------------------------------------------------------------------

/// `cpu::fake_quant::fake_quant` (rounding by 1.5·2^23, AVX2) is bit-identical to
/// `fake_quant_reference` (round_ties_even, element by element).
#[test]
fn cpu_fake_quant_equals_reference() {
    let all = cases(&FAKE_QUANT_BITS, &FAKE_QUANT_BITS_LARGE, true);
    let mut failures = Vec::new();
    for case in &all {
        let label = case.label("cpu_fake_quant_vs_reference");
        let d = case.data();
        let mut fast = vec![0.0f32; case.n()];
        let mut reference = vec![0.0f32; case.n()];
        let segs = [d.seg];
        let r = cpu::fake_quant::fake_quant(&d.x, &mut fast, &d.scale, &d.zero, &segs)
            .and_then(|_| {
                cpu::fake_quant::fake_quant_reference(
                    &d.x,
                    &mut reference,
                    &d.scale,
                    &d.zero,
                    &segs,
                )
            })
            .map_err(|e| format!("{label}: {e}"))
            .and_then(|_| check_bits_equal(&label, "fast path", &reference, &fast));
        failures.extend(r.err());
    }
    finish("cpu_fake_quant_equals_reference", all.len(), failures);
}

/// Edge values through both CPU forms: exact ties k + ½ (both signs), values just off a tie,
/// ±0, tiny and huge magnitudes far outside the range, on every width and mode.
#[test]
fn cpu_fake_quant_equals_reference_on_edge_values() {
    let mut failures = Vec::new();
    let mut count = 0;
    for mode in MODES {
        for bits in 1..=16u32 {
            let Ok(scheme) = AffineScheme::new(bits, mode) else {
                continue;
            };
            for s in [1.0f32, 0.1, 0.37, 3.0e-3, 1.0e4] {
                let z = if scheme.is_symmetric() {
                    0
                } else {
                    (scheme.qmax() + 1) / 3
                };
                let mut x = Vec::new();
                for k in -70_000i32..=70_000 {
                    if k.unsigned_abs() > 300 && k % 97 != 0 {
                        continue;
                    }
                    let t = k as f32 + 0.5;
                    x.extend([
                        t * s,
                        f32::from_bits((t * s).to_bits() + 1),
                        f32::from_bits((t * s).to_bits() - 1),
                        k as f32 * s,
                    ]);
                }
                x.extend([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, f32::MAX, f32::MIN]);
                let n = x.len();
                let seg = AffineSegment {
                    src: 0,
                    dst: 0,
                    len: n as u32,
                    group_len: n as u32,
                    group_phase: 0,
                    param: 0,
                    qmin: scheme.qmin(),
                    qmax: scheme.qmax(),
                    bits,
                };
                let label = format!(
                    "cpu_fake_quant_vs_reference(edge values, n={n}, bits={bits}, mode={}, s={s:e}, z={z})",
                    mode_name(mode)
                );
                let mut fast = vec![0.0f32; n];
                let mut reference = vec![0.0f32; n];
                let r = cpu::fake_quant::fake_quant(&x, &mut fast, &[s], &[z], &[seg])
                    .and_then(|_| {
                        cpu::fake_quant::fake_quant_reference(
                            &x,
                            &mut reference,
                            &[s],
                            &[z],
                            &[seg],
                        )
                    })
                    .map_err(|e| format!("{label}: {e}"))
                    .and_then(|_| check_bits_equal(&label, "fast path", &reference, &fast));
                failures.extend(r.err());
                count += 1;
            }
        }
    }
    finish(
        "cpu_fake_quant_equals_reference_on_edge_values",
        count,
        failures,
    );
}

/// The segment record accepts any zero point and any code range of at most 2^bits values, so
/// the CPU fast path must equal the reference there too. A zero point 2^22 + 1 below qmin puts
/// the clamped value past what rounding by adding 1.5·2^23 handles exactly.
#[test]
fn cpu_fake_quant_equals_reference_far_from_zero() {
    let x: Vec<f32> = (-40..=40).map(|k| k as f32 * 0.25).collect();
    let n = x.len() as u32;
    let mut failures = Vec::new();
    let mut count = 0;
    for (qmin, qmax, z) in [
        (0, 255, -(1 << 22) - 1),
        (0, 255, -(1 << 22) - 300),
        (-128, 127, (1 << 22) + 129),
        (5_000_001, 5_000_256, 0),
        (-5_000_256, -5_000_001, 0),
        (4_194_305, 4_194_305 + 65_535, 4_194_305 + 100),
    ] {
        count += 1;
        let seg = AffineSegment {
            src: 0,
            dst: 0,
            len: n,
            group_len: n,
            group_phase: 0,
            param: 0,
            qmin,
            qmax,
            bits: 16,
        };
        let label =
            format!("cpu_fake_quant_vs_reference(n={n}, qmin={qmin}, qmax={qmax}, z={z}, s=1)");
        let mut fast = vec![0.0f32; x.len()];
        let mut reference = vec![0.0f32; x.len()];
        let r = cpu::fake_quant::fake_quant(&x, &mut fast, &[1.0], &[z], &[seg])
            .and_then(|_| {
                cpu::fake_quant::fake_quant_reference(&x, &mut reference, &[1.0], &[z], &[seg])
            })
            .map_err(|e| format!("{label}: {e}"))
            .and_then(|_| check_bits_equal(&label, "fast path", &reference, &fast));
        failures.extend(r.err());
    }
    finish(
        "cpu_fake_quant_equals_reference_far_from_zero",
        count,
        failures,
    );
}

// ---------------------------------------------------------------------------------------------
// Batched segment tables
// ---------------------------------------------------------------------------------------------

/// One segment of a batched arena before placement.
struct SegSpec {
    len: usize,
    group_len: usize,
    phase: usize,
    bits: u32,
    mode: AffineMode,
    dist: Dist,
    magnitude: f32,
}

/// An arena of segments: input, per-op segment tables, shared parameters.
struct Arena {
    x: Vec<f32>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    /// Element-to-element segments (fake_quant); src != dst, both mid-buffer and unaligned.
    fq: Vec<AffineSegment>,
    fq_out: usize,
    /// In-place segments (src == dst).
    inplace: Vec<AffineSegment>,
    /// Element-to-word segments (quantize_pack); each starts on a fresh word, with gaps.
    pack: Vec<AffineSegment>,
    words: usize,
    /// Word-to-element segments (dequantize) reading `pack`'s words.
    dequant: Vec<AffineSegment>,
    dists: Vec<Dist>,
    /// Data seed of each segment.
    seeds: Vec<u64>,
}

fn spec(
    len: usize,
    group_len: usize,
    phase: usize,
    bits: u32,
    mode: AffineMode,
    dist: Dist,
    magnitude: f32,
) -> SegSpec {
    SegSpec {
        len,
        group_len,
        phase,
        bits,
        mode,
        dist,
        magnitude,
    }
}

/// Eight segments of different lengths (one empty, one of a single element), group lengths
/// (whole, row, 32 with a tail, 7, one starting mid-group), widths 1–16, modes and magnitudes
/// from 1e-3 to 1e3, placed at unaligned offsets with gaps in every array.
fn arena(tag: &str, scale_len: usize) -> Arena {
    use AffineMode::*;
    let specs = [
        spec(1000, 1000, 0, 4, Symmetric, Dist::Normal, 1.0),
        spec(257, 32, 0, 3, Asymmetric, Dist::Laplace, 1e-3),
        spec(1757, 251, 0, 8, SymmetricRestricted, Dist::Outliers, 10.0),
        spec(1, 1, 0, 1, Asymmetric, Dist::Normal, 1.0),
        spec(700 * scale_len, 64, 17, 5, Symmetric, Dist::Laplace, 1e3),
        spec(2061, 128, 0, 16, Asymmetric, Dist::Normal, 0.5),
        spec(0, 5, 0, 6, Symmetric, Dist::Normal, 1.0),
        spec(33, 7, 3, 2, SymmetricRestricted, Dist::Constant, 2.0),
    ];
    let mut a = Arena {
        x: Vec::new(),
        scale: Vec::new(),
        zero: Vec::new(),
        fq: Vec::new(),
        fq_out: 0,
        inplace: Vec::new(),
        pack: Vec::new(),
        words: 0,
        dequant: Vec::new(),
        dists: Vec::new(),
        seeds: Vec::new(),
    };
    let (mut fq_dst, mut word) = (11usize, 3usize);
    a.x.extend(std::iter::repeat_n(7.5f32, 5)); // unrelated data before the first segment
    a.scale.extend([9.0f32; 3]);
    a.zero.extend([99i32; 3]);
    for (k, sp) in specs.iter().enumerate() {
        let scheme = AffineScheme::new(sp.bits, sp.mode).unwrap();
        let seed = seed_for(&format!("{tag} arena segment {k}"));
        let xs: Vec<f32> = generate(sp.dist, sp.len, seed)
            .into_iter()
            .map(|v| v * sp.magnitude)
            .collect();
        let src = a.x.len();
        let seg = AffineSegment {
            src: src as u32,
            dst: fq_dst as u32,
            len: sp.len as u32,
            group_len: sp.group_len as u32,
            group_phase: sp.phase as u32,
            param: a.scale.len() as u32,
            qmin: scheme.qmin(),
            qmax: scheme.qmax(),
            bits: sp.bits,
        };
        // Calibrate every group the segment touches from its own elements.
        let groups = seg.groups();
        let mut lo = vec![f32::INFINITY; groups];
        let mut hi = vec![f32::NEG_INFINITY; groups];
        for (i, &v) in xs.iter().enumerate() {
            let g = seg.group_of(i) - seg.param as usize;
            lo[g] = lo[g].min(v);
            hi[g] = hi[g].max(v);
        }
        for g in 0..groups {
            let (s, z) = scheme.params_from_range(lo[g], hi[g]);
            a.scale.push(s);
            a.zero.push(z);
        }
        a.scale.extend([1e9f32; 2]); // parameters no segment may read
        a.zero.extend([77i32; 2]);
        a.x.extend(&xs);
        a.x.extend(std::iter::repeat_n(-3.25f32, 3 + k % 4));
        a.fq.push(seg);
        a.inplace.push(AffineSegment {
            dst: seg.src,
            ..seg
        });
        a.pack.push(AffineSegment {
            dst: word as u32,
            ..seg
        });
        a.dequant.push(AffineSegment {
            src: word as u32,
            dst: seg.dst,
            ..seg
        });
        a.dists.push(sp.dist);
        a.seeds.push(seed);
        fq_dst += sp.len + 1 + 2 * (k % 3);
        word += seg.packed_words() + k % 2;
    }
    a.fq_out = fq_dst + 2;
    a.words = word + 1;
    a
}

/// Runs every op over a whole arena in one call per op on `ctx`, compared with the CPU.
fn run_arena(ctx: &Context, test: &str, arena: &Arena) -> Vec<String> {
    let mut failures = Vec::new();
    let x_bits = f32_bits(&arena.x);
    let base = Call {
        input: &x_bits,
        out_len: arena.fq_out,
        scale: &arena.scale,
        zero: &arena.zero,
        segs: &arena.fq,
    };
    let levels = |label: &str, call: &Call<'_>, xhat: &[u32], layout| -> Check {
        let xhat = as_f32(xhat);
        for (k, seg) in call.segs.iter().enumerate() {
            let one = Call {
                segs: std::slice::from_ref(seg),
                ..*call
            };
            let x_at = match layout {
                Layout::Elements => 0,
                Layout::Packed => arena.fq[k].src as usize,
            };
            check_levels(
                &format!("{label} segment {k}"),
                &one,
                &arena.x,
                &xhat,
                (x_at, layout),
                arena.dists[k],
            )?;
        }
        Ok(())
    };
    let run = |op: Op, call: &Call<'_>, lead: usize| -> Check {
        let label = format!(
            "{}({test}, {} segments, lead={lead}, seeds={:x?})",
            op.name(),
            call.segs.len(),
            arena.seeds
        );
        let expected = cpu_run(op, call).map_err(|e| format!("{label}: CPU: {e}"))?;
        let got = gpu_run_with(ctx, op, &label, call, lead, Some(&expected))?;
        compare_level1(op, &label, call, &arena.x, &expected, &got)?;
        match op {
            Op::FakeQuant | Op::FakeQuantInPlace => levels(&label, call, &got, Layout::Elements)?,
            Op::Dequantize => levels(&label, call, &got, Layout::Packed)?,
            Op::QuantizePack => {}
        }
        Ok(())
    };
    failures.extend(run(Op::FakeQuant, &base, 13).err());
    let inplace = Call {
        out_len: arena.x.len(),
        segs: &arena.inplace,
        ..base
    };
    failures.extend(run(Op::FakeQuantInPlace, &inplace, 3).err());
    let pack_call = Call {
        out_len: arena.words,
        segs: &arena.pack,
        ..base
    };
    failures.extend(run(Op::QuantizePack, &pack_call, 1).err());
    match cpu_run(Op::QuantizePack, &pack_call) {
        Ok(codes) => {
            let dq = Call {
                input: &codes,
                out_len: arena.fq_out,
                segs: &arena.dequant,
                ..base
            };
            failures.extend(run(Op::Dequantize, &dq, 70).err());
        }
        Err(e) => failures.push(format!("{test}: CPU quantize_pack: {e}")),
    }
    failures
}

/// Eight segments of one arena, each with its own length, groups, width and range, some
/// starting mid-buffer at unaligned offsets and one mid-group, in ONE call per op.
#[test]
fn batched_segments_in_one_call() {
    let ctx = gpu_or_skip!();
    let a = arena("batched", 1);
    finish(
        "batched_segments_in_one_call",
        4,
        run_arena(ctx, "batched", &a),
    );
}

// ---------------------------------------------------------------------------------------------
// Chunking: binding windows and folded grids
// ---------------------------------------------------------------------------------------------

/// A binding of 4 KiB + 52 B (~960 f32 per chunk: chunk ends fall mid-row and mid-group) and
/// at most 7 workgroups per grid dimension.
const TINY_WINDOWS: WorkLimits = WorkLimits {
    max_binding_bytes: 4096 + 52,
    max_workgroups_per_dim: 7,
};

/// A binding of 64 KiB + 36 B: up to 16 fake-quant workgroups per chunk, folded into a 7×3
/// grid whose last row is partly idle.
const FOLDED_GRID: WorkLimits = WorkLimits {
    max_binding_bytes: 65536 + 36,
    max_workgroups_per_dim: 7,
};

/// 2^20 + 3 elements per tensor, per channel (rows of 919: chunk ends fall mid-row) and per
/// flat group of 128 (mid-group), at packed widths 3 and 5 (codes straddle words); then
/// smaller tensors through every width of 3, 5 and 8.
fn chunk_cases() -> Vec<Case> {
    use Gran::*;
    let n = (1 << 20) + 3;
    let mut out = Vec::new();
    for (k, (rows, cols, gran, bits)) in [
        (1, n, Tensor, 5),
        (1141, 919, Channel, 3),
        (1, n, Group(128), 5),
    ]
    .into_iter()
    .enumerate()
    {
        out.push(Case {
            rows,
            cols,
            gran,
            bits,
            mode: MODES[k % 3],
            dist: Dist::ALL[k % 3],
        });
    }
    for (k, (rows, cols, gran)) in [
        (3, 1757, Group(100)),
        (251, 7, Channel),
        (29, 1001, Channel),
        (1, 33_333, Tensor),
    ]
    .into_iter()
    .enumerate()
    {
        for (j, bits) in [3u32, 5, 8].into_iter().enumerate() {
            out.push(Case {
                rows,
                cols,
                gran,
                bits,
                mode: MODES[(k + j) % 3],
                dist: Dist::ALL[(k + j) % 3],
            });
        }
    }
    out
}

fn run_chunked(test: &str, limits: WorkLimits) {
    let ctx = gpu_or_skip!();
    let ctx = ctx.with_work_limits(limits);
    let all = chunk_cases();
    let mut failures = Vec::new();
    let mut count = 0;
    for case in &all {
        for op in [
            Op::FakeQuant,
            Op::FakeQuantInPlace,
            Op::QuantizePack,
            Op::Dequantize,
        ] {
            count += 1;
            failures.extend(
                run_case(&ctx, op, case)
                    .map_err(|e| format!("[{limits:?}] {e}"))
                    .err(),
            );
        }
    }
    let a = arena(test, 3);
    count += 4;
    failures.extend(
        run_arena(&ctx, test, &a)
            .into_iter()
            .map(|e| format!("[{limits:?}] {e}")),
    );
    finish(test, count, failures);
}

/// 2^20 + 3 elements through ~1,100 binding windows of ~4 KiB each.
#[test]
fn chunked_tiny_binding_windows() {
    run_chunked("chunked_tiny_binding_windows", TINY_WINDOWS);
}

/// Chunks of 64 KiB whose grids fold into 2-D at 7 workgroups per dimension.
#[test]
fn chunked_folded_grid() {
    run_chunked("chunked_folded_grid", FOLDED_GRID);
}

/// A per-dimension limit of 2 workgroups with the device's own binding size: every dispatch
/// must still fit a 2×2 grid, so the launcher has to split work by workgroups too.
#[test]
fn chunked_grid_limit_smaller_than_a_binding() {
    let ctx = gpu_or_skip!();
    let limits = WorkLimits {
        max_binding_bytes: u64::MAX,
        max_workgroups_per_dim: 2,
    };
    let ctx = ctx.with_work_limits(limits);
    let case = Case {
        rows: 33,
        cols: 1001,
        gran: Gran::Channel,
        bits: 4,
        mode: AffineMode::Asymmetric,
        dist: Dist::Normal,
    };
    let mut failures = Vec::new();
    for op in [Op::FakeQuant, Op::QuantizePack, Op::Dequantize] {
        failures.extend(
            run_case(&ctx, op, &case)
                .map_err(|e| format!("[{limits:?}] {e}"))
                .err(),
        );
    }
    finish("chunked_grid_limit_smaller_than_a_binding", 3, failures);
}

// ---------------------------------------------------------------------------------------------
// One tensor larger than a storage binding
// ---------------------------------------------------------------------------------------------

/// 4097 × 8191 f32 (134,234,108 bytes, more than a 128 MiB binding), per-channel groups of
/// odd length so the binding split falls mid-row: quantize_pack (4-bit) and fake_quant in
/// place, each compared with the CPU. Host memory stays at about four copies of the tensor.
#[test]
fn big_tensor_larger_than_one_binding() {
    let ctx = gpu_or_skip!();
    let (rows, cols) = (4097usize, 8191usize);
    let n = rows * cols;
    let binding = ctx.work_limits().max_binding_bytes;
    assert!(
        n as u64 * 4 > binding.min(128 << 20),
        "the tensor must exceed one binding"
    );
    let case = Case {
        rows,
        cols,
        gran: Gran::Channel,
        bits: 4,
        mode: AffineMode::Asymmetric,
        dist: Dist::Laplace,
    };
    let label = case.label("big");
    let t0 = std::time::Instant::now();
    let mut d = case.data();
    let segs = [d.seg];
    let err = |e: wgquant::Error| format!("{label}: {e}");
    let r = (|| -> Check {
        // quantize_pack
        let words = d.seg.packed_words();
        let x = GpuTensor::from_f32(ctx, &d.x, &[n]).map_err(err)?;
        let scale = GpuTensor::from_f32(ctx, &d.scale, &[d.scale.len()]).map_err(err)?;
        let zero = GpuTensor::from_i32(ctx, &d.zero, &[d.zero.len()]).map_err(err)?;
        let codes = Guarded::new(ctx, 7, words, ElemType::U32).map_err(err)?;
        gpu::quantize_pack::quantize_pack(ctx, &x, &codes.view, &scale, &zero, &segs)
            .map_err(err)?;
        let mut cpu_codes = vec![0u32; words];
        cpu::quantize_pack::quantize_pack(&d.x, &mut cpu_codes, &d.scale, &d.zero, &segs)
            .map_err(err)?;
        let got = codes.check(ctx, &label, &[0..words], Some(&cpu_codes))?;
        check_packed_codes(
            &format!("{label} quantize_pack"),
            &d.quantizer(),
            &d.x,
            &cpu_codes,
            &got,
        )?;
        drop((codes, got, cpu_codes));
        // fake_quant in place on the uploaded tensor, then the CPU in place on the host copy.
        let buf = Guarded::new(ctx, 0, n, ElemType::F32).map_err(err)?;
        let sentinels = buf.full.slice(n, &[TRAIL_SENTINELS]).map_err(err)?;
        drop(x);
        buf.view.write(ctx, &d.x).map_err(err)?;
        gpu::fake_quant::fake_quant(ctx, &buf.view, &buf.view, &scale, &zero, &segs)
            .map_err(err)?;
        let got = buf.view.to_f32(ctx).map_err(err)?;
        let tail: Vec<u32> = sentinels.download(ctx).map_err(err)?;
        if let Some(k) = tail.iter().position(|&w| w != POISON) {
            return Err(format!(
                "{label}: sentinel word {k} after the tensor was overwritten"
            ));
        }
        let x_in = d.x.clone();
        cpu::fake_quant::fake_quant_inplace(&mut d.x, &d.scale, &d.zero, &segs).map_err(err)?;
        let q = Quantizer {
            seg: d.seg,
            scale: &d.scale,
            zero: &d.zero,
        };
        check_fake_quant_codes(
            &format!("{label} fake_quant in place"),
            &q,
            &x_in,
            &d.x,
            &got,
        )?;
        check_quantizer_levels(
            &format!("{label} fake_quant in place"),
            &q,
            &x_in,
            &got,
            case.dist,
        )
    })();
    say(&format!(
        "big_tensor_larger_than_one_binding: {n} elements in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    finish(
        "big_tensor_larger_than_one_binding",
        2,
        r.err().into_iter().collect(),
    );
}

// ---------------------------------------------------------------------------------------------
// Bad arguments: errors, never panics, never a write
// ---------------------------------------------------------------------------------------------

/// A well-formed call of 100 elements, 4 groups of 25: input, output, parameters.
struct Good {
    x: Vec<f32>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    seg: AffineSegment,
}

fn good() -> Good {
    let scheme = AffineScheme::new(4, AffineMode::Asymmetric).unwrap();
    let x = generate(Dist::Normal, 100, seed_for("bad arguments"));
    let (scale, zero) = group_params(&x, 25, scheme);
    Good {
        seg: whole_segment(100, 25, scheme),
        x,
        scale,
        zero,
    }
}

/// Every op on both backends with `segs`; each must return an error, and the GPU must not
/// have written its (poisoned) output.
fn expect_rejected(ctx: &Context, what: &str, g: &Good, segs: &[AffineSegment]) -> Vec<String> {
    let x_bits = f32_bits(&g.x);
    let words = g.seg.packed_words();
    let codes = vec![0u32; words];
    let mut failures = Vec::new();
    for op in [
        Op::FakeQuant,
        Op::FakeQuantInPlace,
        Op::QuantizePack,
        Op::Dequantize,
    ] {
        let label = format!("{}(bad: {what})", op.name());
        let call = Call {
            input: if op == Op::Dequantize {
                &codes
            } else {
                &x_bits
            },
            out_len: if op == Op::QuantizePack { words } else { 100 },
            scale: &g.scale,
            zero: &g.zero,
            segs,
        };
        let cpu = catch_unwind(AssertUnwindSafe(|| cpu_run(op, &call)));
        match cpu {
            Ok(Ok(_)) => failures.push(format!("{label}: the CPU twin accepted it")),
            Err(_) => failures.push(format!("{label}: the CPU twin panicked")),
            Ok(Err(_)) => {}
        }
        let gpu = catch_unwind(AssertUnwindSafe(|| {
            gpu_run_with(ctx, op, &label, &call, 2, None)
        }));
        match gpu {
            Ok(Ok(_)) => failures.push(format!("{label}: the GPU accepted it")),
            Err(_) => failures.push(format!("{label}: the GPU launcher panicked")),
            // The error must come from the launcher, not from finding unwritten poison.
            Ok(Err(e)) if e.contains("poison") || e.contains("overwritten") => failures.push(e),
            Ok(Err(_)) => {}
        }
    }
    failures
}

#[test]
fn bad_segment_tables_are_errors() {
    let ctx = gpu_or_skip!();
    let g = good();
    let s = g.seg;
    let half = AffineSegment {
        len: 50,
        group_len: 25,
        ..s
    };
    let cases: Vec<(&str, Vec<AffineSegment>)> = vec![
        (
            "overlapping outputs",
            // Elements [0, 50) and [5, 55); words [0, 7) and [5, 12) of 13.
            vec![
                half,
                AffineSegment {
                    dst: 5,
                    src: 5,
                    param: 1,
                    ..half
                },
            ],
        ),
        (
            "segment past its input",
            vec![AffineSegment { src: 1, ..s }],
        ),
        (
            "segment past its output",
            vec![AffineSegment {
                dst: 60,
                src: 0,
                len: 50,
                ..s
            }],
        ),
        (
            "segment past its parameters",
            vec![AffineSegment { param: 1, ..s }],
        ),
        ("group_len 0", vec![AffineSegment { group_len: 0, ..s }]),
        ("bits 0", vec![AffineSegment { bits: 0, ..s }]),
        ("bits 17", vec![AffineSegment { bits: 17, ..s }]),
        (
            "qmin > qmax",
            vec![AffineSegment {
                qmin: 5,
                qmax: 4,
                ..s
            }],
        ),
        (
            "range wider than bits",
            vec![AffineSegment {
                qmin: 0,
                qmax: 16,
                ..s
            }],
        ),
    ];
    let mut failures = Vec::new();
    for (what, segs) in &cases {
        failures.extend(expect_rejected(ctx, what, &g, segs));
    }
    // The device is still usable afterwards.
    let ok = Case {
        rows: 1,
        cols: 100,
        gran: Gran::Group(25),
        bits: 4,
        mode: AffineMode::Asymmetric,
        dist: Dist::Normal,
    };
    failures.extend(run_case(ctx, Op::FakeQuant, &ok).err());
    finish(
        "bad_segment_tables_are_errors",
        cases.len() * 8 + 1,
        failures,
    );
}

/// In place means src == dst in every segment: the CPU twin rejects other tables, and the
/// GPU (which in place only reads dst) must too, rather than silently ignore src.
#[test]
fn in_place_with_src_different_from_dst_is_an_error() {
    let ctx = gpu_or_skip!();
    let g = good();
    let half = AffineSegment {
        len: 50,
        group_len: 25,
        ..g.seg
    };
    let mut failures = Vec::new();
    let tables = [
        (
            "src shifted",
            vec![AffineSegment {
                src: 50,
                dst: 0,
                ..half
            }],
        ),
        (
            "two segments with swapped halves",
            vec![
                AffineSegment {
                    src: 50,
                    dst: 0,
                    ..half
                },
                AffineSegment {
                    src: 0,
                    dst: 50,
                    param: 2,
                    ..half
                },
            ],
        ),
    ];
    for (what, segs) in &tables {
        let label = format!("fake_quant_inplace(bad: {what})");
        let mut y = g.x.clone();
        if cpu::fake_quant::fake_quant_inplace(&mut y, &g.scale, &g.zero, segs).is_ok() {
            failures.push(format!("{label}: the CPU twin accepted it"));
        }
        let r = (|| -> Result<bool, wgquant::Error> {
            let t = GpuTensor::from_f32(ctx, &g.x, &[100])?;
            let scale = GpuTensor::from_f32(ctx, &g.scale, &[4])?;
            let zero = GpuTensor::from_i32(ctx, &g.zero, &[4])?;
            Ok(gpu::fake_quant::fake_quant(ctx, &t, &t, &scale, &zero, segs).is_ok())
        })();
        match r {
            Ok(true) => failures.push(format!(
                "{label}: the GPU accepted it (and read dst instead of src)"
            )),
            Ok(false) => {}
            Err(e) => failures.push(format!("{label}: setup failed: {e}")),
        }
    }
    finish(
        "in_place_with_src_different_from_dst_is_an_error",
        tables.len(),
        failures,
    );
}

#[test]
fn wrong_dtypes_and_overlapping_tensors_are_errors() {
    let ctx = gpu_or_skip!();
    let g = good();
    let segs = [g.seg];
    let words = g.seg.packed_words();
    // (what was tried, whether it was accepted)
    let mut tried: Vec<(String, bool)> = Vec::new();
    let r = (|| -> wgquant::Result<()> {
        use gpu::dequantize::dequantize as dq;
        use gpu::fake_quant::fake_quant as fq;
        use gpu::quantize_pack::quantize_pack as qp;
        let f = |n: usize| GpuTensor::zeros(ctx, &[n], ElemType::F32);
        let u = |n: usize| GpuTensor::zeros(ctx, &[n], ElemType::U32);
        let i = |n: usize| GpuTensor::zeros(ctx, &[n], ElemType::I32);
        let x = GpuTensor::from_f32(ctx, &g.x, &[100])?;
        let scale = GpuTensor::from_f32(ctx, &g.scale, &[4])?;
        let zero = GpuTensor::from_i32(ctx, &g.zero, &[4])?;
        let codes = u(words)?;
        let y = f(100)?;
        let mut t = |what: &str, r: wgquant::Result<()>| tried.push((what.to_string(), r.is_ok()));
        t(
            "fake_quant(u32 input)",
            fq(ctx, &u(100)?, &y, &scale, &zero, &segs),
        );
        t(
            "fake_quant(i32 output)",
            fq(ctx, &x, &i(100)?, &scale, &zero, &segs),
        );
        t(
            "fake_quant(i32 scale)",
            fq(ctx, &x, &y, &i(4)?, &zero, &segs),
        );
        t(
            "fake_quant(f32 zero)",
            fq(ctx, &x, &y, &scale, &f(4)?, &segs),
        );
        t(
            "quantize_pack(f32 codes)",
            qp(ctx, &x, &f(words)?, &scale, &zero, &segs),
        );
        t(
            "quantize_pack(u32 input)",
            qp(ctx, &u(100)?, &codes, &scale, &zero, &segs),
        );
        t(
            "quantize_pack(f32 zero)",
            qp(ctx, &x, &codes, &scale, &f(4)?, &segs),
        );
        t(
            "dequantize(f32 codes)",
            dq(ctx, &f(words)?, &y, &scale, &zero, &segs),
        );
        t(
            "dequantize(u32 output)",
            dq(ctx, &codes, &u(100)?, &scale, &zero, &segs),
        );
        t(
            "dequantize(i32 scale)",
            dq(ctx, &codes, &y, &i(4)?, &zero, &segs),
        );
        // Input and output partly overlapping in one buffer (neither distinct nor in place).
        let arena = f(300)?;
        let a = arena.slice(0, &[100])?;
        let b = arena.slice(50, &[100])?;
        a.write(ctx, &g.x)?;
        t(
            "fake_quant(partly overlapping input and output)",
            fq(ctx, &a, &b, &scale, &zero, &segs),
        );
        let c = GpuTensor::wrap(arena.buffer().clone(), 60 * 4, &[words], ElemType::U32)?;
        t(
            "quantize_pack(codes inside the input)",
            qp(ctx, &a, &c, &scale, &zero, &segs),
        );
        // Tensor views that are misaligned or do not fit.
        let buf = || y.buffer().clone();
        let ok = |r: wgquant::Result<GpuTensor>| r.map(|_| ());
        t(
            "GpuTensor::wrap(offset 2)",
            ok(GpuTensor::wrap(buf(), 2, &[10], ElemType::F32)),
        );
        t(
            "GpuTensor::wrap(past the buffer end)",
            ok(GpuTensor::wrap(buf(), 4, &[100], ElemType::F32)),
        );
        t("GpuTensor::slice(past the end)", ok(y.slice(90, &[11])));
        t("GpuTensor::reshape(wrong count)", ok(y.reshape(&[3, 33])));
        // 100 f32 are 400 bytes: not a whole number of 24-byte items.
        t(
            "GpuTensor::download::<[u64; 3]>",
            y.download::<[u64; 3]>(ctx).map(|_| ()),
        );
        t("GpuTensor::to_u32 of f32", y.to_u32(ctx).map(|_| ()));
        t("GpuTensor::write(99 of 100)", y.write(ctx, &[0f32; 99]));
        Ok(())
    })();
    let mut failures: Vec<String> = tried
        .iter()
        .filter(|(_, accepted)| *accepted)
        .map(|(what, _)| format!("{what}: accepted"))
        .collect();
    if let Err(e) = r {
        failures.push(format!("setup failed: {e}"));
    }
    let mut count = tried.len();
    // Invalid schemes.
    for (bits, mode) in [
        (0, AffineMode::Symmetric),
        (17, AffineMode::Asymmetric),
        (1, AffineMode::SymmetricRestricted),
    ] {
        count += 1;
        if AffineScheme::new(bits, mode).is_ok() {
            failures.push(format!("AffineScheme::new({bits}, {mode:?}): accepted"));
        }
    }
    finish(
        "wrong_dtypes_and_overlapping_tensors_are_errors",
        count,
        failures,
    );
}

/// Work limits too small to hold even one aligned chunk: an error, or a correct result,
/// never a panic (the launcher's budget is `max_binding_bytes / 4 − alignment`).
#[test]
fn binding_limit_below_alignment_is_an_error() {
    let ctx = gpu_or_skip!();
    let g = good();
    let mut failures = Vec::new();
    let mut expected = vec![0.0f32; 100];
    cpu::fake_quant::fake_quant(&g.x, &mut expected, &g.scale, &g.zero, &[g.seg]).unwrap();
    for bytes in [4u64, 64, 200] {
        let small = ctx.with_work_limits(WorkLimits {
            max_binding_bytes: bytes,
            max_workgroups_per_dim: 65535,
        });
        let label = format!("fake_quant(max_binding_bytes={bytes})");
        let r = catch_unwind(AssertUnwindSafe(|| {
            let x = GpuTensor::from_f32(&small, &g.x, &[100])?;
            let y = GpuTensor::zeros(&small, &[100], ElemType::F32)?;
            let scale = GpuTensor::from_f32(&small, &g.scale, &[4])?;
            let zero = GpuTensor::from_i32(&small, &g.zero, &[4])?;
            gpu::fake_quant::fake_quant(&small, &x, &y, &scale, &zero, &[g.seg])?;
            y.to_f32(&small)
        }));
        match r {
            Err(_) => failures.push(format!("{label}: panicked")),
            Ok(Ok(got)) => {
                let q = Quantizer {
                    seg: g.seg,
                    scale: &g.scale,
                    zero: &g.zero,
                };
                failures.extend(check_fake_quant_codes(&label, &q, &g.x, &expected, &got).err());
            }
            Ok(Err(_)) => {}
        }
    }
    finish("binding_limit_below_alignment_is_an_error", 3, failures);
}

/// An empty segment table and zero-length segments write nothing.
#[test]
fn empty_work_writes_nothing() {
    let ctx = gpu_or_skip!();
    let g = good();
    let x_bits = f32_bits(&g.x);
    let empty = AffineSegment { len: 0, ..g.seg };
    let mut failures = Vec::new();
    for segs in [
        vec![],
        vec![
            empty,
            AffineSegment {
                src: 99,
                dst: 7,
                ..empty
            },
        ],
    ] {
        for op in [Op::FakeQuant, Op::QuantizePack] {
            let label = format!("{}({} empty segments)", op.name(), segs.len());
            let call = Call {
                input: &x_bits,
                out_len: 100,
                scale: &g.scale,
                zero: &g.zero,
                segs: &segs,
            };
            failures.extend(gpu_run_with(ctx, op, &label, &call, 0, None).err());
        }
    }
    finish("empty_work_writes_nothing", 4, failures);
}
