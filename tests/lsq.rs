//! LSQ / LSQ+ kernels and the QAT trainer: GPU against the CPU twins, the step gradient against
//! a finite difference, every piecewise case, per-channel vs per-tensor, determinism, and a
//! short training run whose loss goes down.

mod common;

use common::{Dist, Guarded, as_f32, finish, generate, gpu, poisoned, rng, seed_for};
use rand::RngExt;
use wgquant::cpu;
use wgquant::gpu::lsq::{LsqConfig, LsqGrads};
use wgquant::gpu::softmax_xent::XentOut;
use wgquant::gpu::{self as g, Context, ElemType, GpuTensor, WorkLimits};
use wgquant::kernel::lsq::StepInit;
use wgquant::kernel::optimizer::{Rule, Update};
use wgquant::qat::data::{Dataset, digits, digits_path};
use wgquant::qat::engine::{CpuEngine, GpuEngine};
use wgquant::qat::{Mlp, QuantSpec, TrainConfig};

/// A quantizer input u = (v − β)/s within this relative distance of a rounding tie or of a
/// clamp boundary may land on either side on the GPU (division within 2.5 ULP), so the
/// element's outputs may differ there; 1e-6 relative ≈ 8 ULP (see TIE_REL_TOL).
const EDGE_REL_TOL: f64 = 1e-6;

/// Relative bound on the per-group gradient sums: the GPU adds per-tile tree sums in f32 where
/// the CPU adds in f64; an f32 sum of n terms errs by at most ≈ log2(n)·2⁻²⁴ relative to the
/// sum of magnitudes with a tree, well under 1e-5 for the sizes here.
const GRAD_SUM_REL_TOL: f64 = 1e-5;

fn near_edge(u: f64, cfg: &LsqConfig) -> bool {
    let tol = EDGE_REL_TOL * u.abs().max(1.0);
    let frac = u - u.floor();
    (frac - 0.5).abs() < tol
        || (u + f64::from(cfg.qn())).abs() < tol
        || (u - f64::from(cfg.qp())).abs() < tol
}

struct Case {
    label: String,
    cfg: LsqConfig,
    v: Vec<f32>,
    dy: Vec<f32>,
    group_len: usize,
    step: Vec<f32>,
    beta: Vec<f32>,
}

fn make_case(n: usize, group_len: usize, bits: u32, signed: bool, plus: bool, dist: Dist) -> Case {
    let label = format!(
        "lsq(n={n}, group={group_len}, bits={bits}, signed={signed}, plus={plus}, dist={dist:?})"
    );
    let seed = seed_for(&label);
    let cfg = LsqConfig::new(bits, signed).unwrap();
    let v = generate(dist, n, seed);
    let dy = generate(Dist::Normal, n, seed ^ 1);
    let groups = n / group_len;
    let mut r = rng(seed ^ 2);
    // Steps that put some values past both ends of the range.
    let spread = v.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-3);
    let step: Vec<f32> = (0..groups)
        .map(|_| spread / cfg.qp().max(1.0) * r.random_range(0.3f32..1.2))
        .collect();
    let beta: Vec<f32> = (0..groups)
        .map(|_| {
            if plus {
                r.random_range(-0.5f32..0.5)
            } else {
                0.0
            }
        })
        .collect();
    Case {
        label: format!("{label} seed={seed:#x}"),
        cfg,
        v,
        dy,
        group_len,
        step,
        beta,
    }
}

/// Runs the fused backward on the GPU (outputs poisoned and guarded) and the CPU; compares.
fn check_backward(ctx: &Context, c: &Case) -> Result<(), String> {
    let n = c.v.len();
    let groups = n / c.group_len;
    let (mut dv, mut vh) = (vec![0f32; n], vec![0f32; n]);
    let want = cpu::lsq::lsq_backward(
        &c.cfg,
        &c.v,
        &c.dy,
        c.group_len,
        &c.step,
        &c.beta,
        &mut dv,
        &mut vh,
    )
    .map_err(|e| format!("{}: cpu: {e}", c.label))?;
    let ge = |e: wgquant::Error| format!("{}: gpu: {e}", c.label);
    let up = |x: &[f32]| GpuTensor::from_f32(ctx, x, &[x.len()]);
    let (v, dy, s, b) = (
        up(&c.v).map_err(ge)?,
        up(&c.dy).map_err(ge)?,
        up(&c.step).map_err(ge)?,
        up(&c.beta).map_err(ge)?,
    );
    let outs: Vec<Guarded> = [n, n, groups, groups]
        .iter()
        .map(|&len| Guarded::new(ctx, 0, len, ElemType::F32))
        .collect::<wgquant::Result<_>>()
        .map_err(ge)?;
    let grads = LsqGrads {
        grad_vhat: &dy,
        grad_v: &outs[0].view,
        vhat: &outs[1].view,
        grad_step: &outs[2].view,
        grad_beta: &outs[3].view,
    };
    ctx.run("lsq test", |enc| {
        g::lsq::encode_backward(ctx, enc, &c.cfg, &v, c.group_len, &s, &b, &grads)
    })
    .map_err(ge)?;
    let got: Vec<Vec<f32>> = outs
        .iter()
        .zip([n, n, groups, groups])
        .map(|(o, len)| o.check(ctx, &c.label, &[0..len], None).map(|w| as_f32(&w)))
        .collect::<Result<_, _>>()?;
    // Elementwise outputs: equal except at a tie or a clamp edge.
    let mut slack = vec![0f64; groups];
    for i in 0..n {
        let gi = i / c.group_len;
        let u = (f64::from(c.v[i]) - f64::from(c.beta[gi])) / f64::from(c.step[gi]);
        let edge = near_edge(u, &c.cfg);
        if edge {
            // A flipped element moves the sums by at most |dy|·(QN + QP + 1).
            slack[gi] += f64::from(c.dy[i].abs()) * f64::from(c.cfg.qn() + c.cfg.qp() + 1.0);
            continue;
        }
        if got[0][i].to_bits() != dv[i].to_bits() || got[1][i].to_bits() != vh[i].to_bits() {
            return Err(format!(
                "{}: element {i} (u = {u}): gpu (dv {}, v̂ {}) cpu (dv {}, v̂ {})",
                c.label, got[0][i], got[1][i], dv[i], vh[i]
            ));
        }
    }
    // Per-group sums within the summation bound plus the edge slack.
    let scale = f64::from(c.cfg.grad_scale_for(c.group_len));
    for gi in 0..groups {
        let (s, b) = (c.step[gi], c.beta[gi]);
        let mags = c.v[gi * c.group_len..(gi + 1) * c.group_len]
            .iter()
            .zip(&c.dy[gi * c.group_len..])
            .map(|(&x, &d)| {
                let u = f64::from((x - b) / s);
                f64::from(d.abs()) * (u.abs() + 1.0)
            })
            .sum::<f64>();
        for (what, gpu_v, cpu_v, k) in [
            ("∂L/∂s", got[2][gi], want.step[gi], scale),
            ("∂L/∂β", got[3][gi], want.beta[gi], 1.0),
        ] {
            let bound = GRAD_SUM_REL_TOL * mags * k + slack[gi] * k + 1e-30;
            if !gpu_v.is_finite() || (f64::from(gpu_v) - f64::from(cpu_v)).abs() > bound {
                return Err(format!(
                    "{}: group {gi} {what}: gpu {gpu_v} cpu {cpu_v} (bound {bound:e})",
                    c.label
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn lsq_backward_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let small = ctx.with_work_limits(WorkLimits {
        max_binding_bytes: 16384 + 48,
        max_workgroups_per_dim: 7,
    });
    let mut failures = Vec::new();
    let mut cases = 0;
    for &(n, group_len) in &[
        (1usize, 1usize),
        (257, 257),
        (1757, 1757),
        (64 * 33, 33),
        (300 * 7, 300),
        ((1 << 20) + 3, (1 << 20) + 3),
        (24 * 8192 + 40, 3 * 8192 + 5),
    ] {
        for bits in [2u32, 3, 4, 8] {
            for (signed, plus) in [(true, false), (false, false), (false, true)] {
                let dist = if signed {
                    Dist::Laplace
                } else {
                    Dist::Outliers
                };
                let c = make_case(n, group_len, bits, signed, plus, dist);
                let heavy = n > 100_000;
                if heavy && bits != 3 {
                    continue;
                }
                for (x, limits) in [(ctx, "device"), (&small, "small")] {
                    if limits == "small" && (n < 4096 || heavy && signed) {
                        continue;
                    }
                    cases += 1;
                    if let Err(e) = check_backward(x, &c) {
                        failures.push(format!("[{limits}] {e}"));
                    }
                }
            }
        }
    }
    finish("lsq_backward_matches_cpu", cases, failures);
}

#[test]
fn every_piecewise_case_by_hand() {
    // 3-bit signed: QN = 4, QP = 3; s = 0.5, β = 0.
    let cfg = LsqConfig::new(3, true).unwrap();
    let v = [-3.0f32, -2.0, 0.6, 0.9, 1.5, 2.0];
    // u = -6 (below), -4 (at −QN: below), 1.2 (inside), 1.8 (inside), 3 (at QP: above), 4 (above)
    let dy = [1.0f32; 6];
    let (mut dv, mut vh) = ([0f32; 6], [0f32; 6]);
    let g = cpu::lsq::lsq_backward(&cfg, &v, &dy, 6, &[0.5], &[0.0], &mut dv, &mut vh).unwrap();
    assert_eq!(
        dv,
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        "straight-through only inside"
    );
    assert_eq!(
        vh,
        [-2.0, -2.0, 0.5, 1.0, 1.5, 1.5],
        "v̂ clamped to [−QN·s, QP·s]"
    );
    // ∂v̂/∂s: −4, −4, round(1.2)−1.2 = −0.2, round(1.8)−1.8 = 0.2, 3, 3 → Σ = −2; g = 1/√(6·3).
    let expect = -2.0 / (6.0f32 * 3.0).sqrt();
    assert!(
        (g.step[0] - expect).abs() < 1e-6,
        "{} vs {expect}",
        g.step[0]
    );
    // ∂v̂/∂β = 1 outside: four elements.
    assert_eq!(g.beta[0], 4.0);
    if let Some(ctx) = gpu() {
        let c = Case {
            label: "by hand".into(),
            cfg,
            v: v.to_vec(),
            dy: dy.to_vec(),
            group_len: 6,
            step: vec![0.5],
            beta: vec![0.0],
        };
        check_backward(ctx, &c).unwrap();
    }
}

/// The STE surrogate whose exact derivative the LSQ gradient is: h(s) = s·clamp(u(s)) + s·δ + β
/// with δ = round(u₀) − u₀ frozen at s₀ (LSQ eq. 3 treats round as identity in the backward).
fn surrogate(cfg: &LsqConfig, v: &[f32], c: &[f32], s: f64, b: f64, delta: &[f64]) -> f64 {
    v.iter()
        .zip(c)
        .zip(delta)
        .map(|((&x, &w), &d)| {
            let u = ((f64::from(x) - b) / s).clamp(-f64::from(cfg.qn()), f64::from(cfg.qp()));
            f64::from(w) * (s * u + s * d + b)
        })
        .sum()
}

#[test]
fn step_gradient_matches_finite_difference() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for bits in [2u32, 3, 4, 8] {
        for (signed, plus) in [(true, false), (false, true)] {
            let mut c = make_case(4001, 4001, bits, signed, plus, Dist::Laplace);
            // Keep every u away from the clamp edges, where the surrogate has kinks.
            let (s, b) = (c.step[0], c.beta[0]);
            let edge = |x: f32| {
                let u = (x - b) / s;
                (u + c.cfg.qn()).abs() < 0.05 || (u - c.cfg.qp()).abs() < 0.05
            };
            for x in c.v.iter_mut() {
                if edge(*x) {
                    *x += 0.1 * s;
                }
            }
            let delta: Vec<f64> =
                c.v.iter()
                    .map(|&x| {
                        let u = (f64::from(x) - f64::from(b)) / f64::from(s);
                        let inside = u > -f64::from(c.cfg.qn()) && u < f64::from(c.cfg.qp());
                        if inside { u.round_ties_even() - u } else { 0.0 }
                    })
                    .collect();
            let n = c.v.len();
            let (mut dv, mut vh) = (vec![0f32; n], vec![0f32; n]);
            let gr = cpu::lsq::lsq_backward(&c.cfg, &c.v, &c.dy, n, &[s], &[b], &mut dv, &mut vh)
                .unwrap();
            let (s64, b64) = (f64::from(s), f64::from(b));
            let h = 1e-4 * s64;
            let fd_s = (surrogate(&c.cfg, &c.v, &c.dy, s64 + h, b64, &delta)
                - surrogate(&c.cfg, &c.v, &c.dy, s64 - h, b64, &delta))
                / (2.0 * h);
            let fd_b = (surrogate(&c.cfg, &c.v, &c.dy, s64, b64 + h, &delta)
                - surrogate(&c.cfg, &c.v, &c.dy, s64, b64 - h, &delta))
                / (2.0 * h);
            let analytic_s = f64::from(gr.step[0]) / f64::from(c.cfg.grad_scale_for(n));
            let mag: f64 = c.dy.iter().map(|d| f64::from(d.abs())).sum::<f64>()
                * f64::from(c.cfg.qp() + c.cfg.qn() + 1.0);
            // Central differences of a function linear in s between kinks are exact up to f64
            // rounding of the sums: 1e-6 of the magnitude is generous.
            for (what, fd, an) in [("s", fd_s, analytic_s), ("β", fd_b, f64::from(gr.beta[0]))] {
                cases += 1;
                if (fd - an).abs() > 1e-6 * mag {
                    failures.push(format!(
                        "{}: ∂L/∂{what} analytic {an} vs finite difference {fd}",
                        c.label
                    ));
                }
            }
            if let Some(ctx) = gpu() {
                c.step = vec![s];
                c.beta = vec![b];
                cases += 1;
                if let Err(e) = check_backward(ctx, &c) {
                    failures.push(e);
                }
            }
        }
    }
    finish("step_gradient_matches_finite_difference", cases, failures);
}

#[test]
fn per_channel_with_equal_steps_sums_to_per_tensor() {
    let (rows, cols) = (37usize, 129usize);
    let c = make_case(rows * cols, cols, 4, true, false, Dist::Normal);
    let n = rows * cols;
    let s = c.step[0];
    let (mut dv, mut vh) = (vec![0f32; n], vec![0f32; n]);
    let per_tensor =
        cpu::lsq::lsq_backward(&c.cfg, &c.v, &c.dy, n, &[s], &[0.0], &mut dv, &mut vh).unwrap();
    let per_channel = cpu::lsq::lsq_backward(
        &c.cfg,
        &c.v,
        &c.dy,
        cols,
        &vec![s; rows],
        &vec![0.0; rows],
        &mut dv,
        &mut vh,
    )
    .unwrap();
    let unscaled: f64 = per_channel
        .step
        .iter()
        .map(|&x| f64::from(x) / f64::from(c.cfg.grad_scale_for(cols)))
        .sum();
    let tensor = f64::from(per_tensor.step[0]) / f64::from(c.cfg.grad_scale_for(n));
    assert!(
        (unscaled - tensor).abs() <= 1e-4 * tensor.abs().max(1.0),
        "{unscaled} vs {tensor}"
    );
    if let Some(ctx) = gpu() {
        let mut pc = make_case(n, cols, 4, true, false, Dist::Normal);
        pc.step = vec![s; rows];
        pc.beta = vec![0.0; rows];
        check_backward(ctx, &pc).unwrap();
    }
}

#[test]
fn gpu_results_are_bit_identical_across_runs() {
    let Some(ctx) = gpu() else { return };
    let c = make_case(3 * 8192 + 17, 3 * 8192 + 17, 3, false, true, Dist::Outliers);
    let run = || -> Vec<u32> {
        let up = |x: &[f32]| GpuTensor::from_f32(ctx, x, &[x.len()]).unwrap();
        let (v, dy, s, b) = (up(&c.v), up(&c.dy), up(&c.step), up(&c.beta));
        let z = |n| poisoned(ctx, &[n], ElemType::F32);
        let (dv, vh, gs, gb) = (z(c.v.len()), z(c.v.len()), z(1), z(1));
        let grads = LsqGrads {
            grad_vhat: &dy,
            grad_v: &dv,
            vhat: &vh,
            grad_step: &gs,
            grad_beta: &gb,
        };
        ctx.run("lsq", |enc| {
            g::lsq::encode_backward(ctx, enc, &c.cfg, &v, c.v.len(), &s, &b, &grads)
        })
        .unwrap();
        [gs.to_u32_bits(ctx), gb.to_u32_bits(ctx)].concat()
    };
    assert_eq!(run(), run());
}

trait Bits {
    fn to_u32_bits(&self, ctx: &Context) -> Vec<u32>;
}
impl Bits for GpuTensor {
    fn to_u32_bits(&self, ctx: &Context) -> Vec<u32> {
        self.download::<u32>(ctx).unwrap()
    }
}

#[test]
fn lsq_forward_and_init_match_cpu() {
    let Some(ctx) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    for &(n, group_len) in &[
        (5usize, 5usize),
        (64 * 33, 33),
        (3 * 8192 + 9, 3 * 8192 + 9),
    ] {
        for bits in [2u32, 4, 8] {
            for init in [StepInit::Lsq, StepInit::LsqPlusWeights] {
                cases += 1;
                let c = make_case(n, group_len, bits, true, false, Dist::Laplace);
                let cfg = c.cfg;
                let want = cpu::lsq_init::init_steps(&cfg, init, &c.v, group_len).unwrap();
                let v = GpuTensor::from_f32(ctx, &c.v, &[n]).unwrap();
                let groups = n / group_len;
                let (s, b) = (
                    poisoned(ctx, &[groups], ElemType::F32),
                    poisoned(ctx, &[groups], ElemType::F32),
                );
                ctx.run("init", |enc| {
                    g::lsq_init::encode(ctx, enc, &cfg, init, &v, group_len, &s, &b)
                })
                .unwrap();
                let (got, beta) = (s.to_f32(ctx).unwrap(), b.to_f32(ctx).unwrap());
                // f32 tree sums against f64 sums of ≤ 2^15 terms: 1e-5 relative.
                for (k, (x, y)) in got.iter().zip(&want).enumerate() {
                    if (x - y).abs() > 1e-5 * y.abs() || beta[k] != 0.0 {
                        failures.push(format!(
                            "{} init {init:?} group {k}: gpu {x} cpu {y}, β {}",
                            c.label, beta[k]
                        ));
                        break;
                    }
                }
                // Forward with those steps: equal except at ties.
                let out = Guarded::new(ctx, 7, n, ElemType::F32).unwrap();
                ctx.run("fwd", |enc| {
                    g::lsq::encode_forward(ctx, enc, &cfg, &v, group_len, &s, &b, &out.view)
                })
                .unwrap();
                let mut cpu_out = vec![0f32; n];
                cpu::lsq::lsq_forward(
                    &cfg,
                    &c.v,
                    group_len,
                    &got,
                    &vec![0.0; groups],
                    &mut cpu_out,
                )
                .unwrap();
                match out.check(ctx, &c.label, &[0..n], None) {
                    Err(e) => failures.push(e),
                    Ok(w) => {
                        let gpu_out = as_f32(&w);
                        for i in 0..n {
                            let u = f64::from(c.v[i]) / f64::from(got[i / group_len]);
                            if gpu_out[i] != cpu_out[i] && !near_edge(u, &cfg) {
                                failures.push(format!(
                                    "{} forward element {i}: gpu {} cpu {}",
                                    c.label, gpu_out[i], cpu_out[i]
                                ));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    finish("lsq_forward_and_init_match_cpu", cases, failures);
}

#[test]
fn training_ops_match_cpu() {
    let Some(ctx) = gpu() else { return };
    let seed = seed_for("training ops");
    // ReLU forward/backward: exact.
    let x = generate(Dist::Normal, 1000, seed);
    let dy = generate(Dist::Normal, 1000, seed ^ 1);
    let gx = GpuTensor::from_f32(ctx, &x, &[1000]).unwrap();
    let gdy = GpuTensor::from_f32(ctx, &dy, &[1000]).unwrap();
    let (y, dx) = (
        poisoned(ctx, &[1000], ElemType::F32),
        poisoned(ctx, &[1000], ElemType::F32),
    );
    ctx.run("relu", |enc| {
        g::relu::encode_forward(ctx, enc, &gx, &y)?;
        g::relu::encode_backward(ctx, enc, &gx, &gdy, &dx)
    })
    .unwrap();
    let (mut cy, mut cdx) = (vec![0f32; 1000], vec![0f32; 1000]);
    cpu::relu::relu_forward(&x, &mut cy).unwrap();
    cpu::relu::relu_backward(&x, &dy, &mut cdx).unwrap();
    assert_eq!(y.to_f32(ctx).unwrap(), cy);
    assert_eq!(dx.to_f32(ctx).unwrap(), cdx);

    // Optimizers: a few ULP (the GPU may fuse multiply-adds).
    for rule in [
        Rule::Sgd { momentum: 0.9 },
        Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    ] {
        let u = Update {
            rule,
            t: 3,
            lr: 0.01,
            weight_decay: 1e-3,
            floor: Some(-0.5),
        };
        let (mut w, mut m, mut v) = (
            x.clone(),
            dy.clone(),
            dy.iter().map(|a| a * a).collect::<Vec<_>>(),
        );
        let (gw, gm, gv) = (
            GpuTensor::from_f32(ctx, &w, &[1000]).unwrap(),
            GpuTensor::from_f32(ctx, &m, &[1000]).unwrap(),
            GpuTensor::from_f32(ctx, &v, &[1000]).unwrap(),
        );
        ctx.run("opt", |enc| {
            g::optimizer::encode(ctx, enc, &u, &gw, &gdy, &gm, &gv)
        })
        .unwrap();
        cpu::optimizer::step(&u, &mut w, &dy, &mut m, &mut v).unwrap();
        for (a, b) in gw.to_f32(ctx).unwrap().iter().zip(&w) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1e-3),
                "{rule:?}: {a} vs {b}"
            );
        }
    }

    // Softmax cross-entropy: close; arg-max flags equal.
    let (rows, classes) = (77usize, 10usize);
    let logits = generate(Dist::Normal, rows * classes, seed ^ 2);
    let labels: Vec<u32> = (0..rows as u32).map(|i| (i * 7) % 10).collect();
    let gl = GpuTensor::from_f32(ctx, &logits, &[rows, classes]).unwrap();
    let glab = GpuTensor::from_u32(ctx, &labels, &[rows]).unwrap();
    let (grad, loss, correct) = (
        poisoned(ctx, &[rows, classes], ElemType::F32),
        poisoned(ctx, &[rows], ElemType::F32),
        poisoned(ctx, &[rows], ElemType::U32),
    );
    let out = XentOut {
        grad: &grad,
        loss: &loss,
        correct: &correct,
    };
    ctx.run("xent", |enc| {
        g::softmax_xent::encode(ctx, enc, &gl, &glab, &out)
    })
    .unwrap();
    let (mut cg, mut cl, mut cc) = (
        vec![0f32; rows * classes],
        vec![0f32; rows],
        vec![0u32; rows],
    );
    cpu::softmax_xent::softmax_xent(&logits, classes, &labels, &mut cg, &mut cl, &mut cc).unwrap();
    assert_eq!(correct.to_u32(ctx).unwrap(), cc);
    // exp/log on GPUs are accurate to a few ULP of their results.
    for (a, b) in loss.to_f32(ctx).unwrap().iter().zip(&cl) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "loss {a} vs {b}");
    }
    for (a, b) in grad.to_f32(ctx).unwrap().iter().zip(&cg) {
        assert!((a - b).abs() <= 1e-6, "grad {a} vs {b}");
    }
}

fn small_data() -> (Dataset, Dataset) {
    let data = digits(&digits_path()).expect("data/digits.csv.gz is in the repository");
    let (train, test) = data.split(0.2, 7);
    (train.select(&(0..400).collect::<Vec<_>>()), test)
}

fn config(quant: Option<QuantSpec>, epochs: usize) -> TrainConfig {
    TrainConfig {
        widths: vec![64, 32, 10],
        quant,
        rule: Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        lr: 0.01,
        weight_decay: 0.0,
        epochs,
        batch: 50,
        seed: 11,
    }
}

#[test]
fn short_training_lowers_the_loss_on_both_backends() {
    let (train, _) = small_data();
    let spec = QuantSpec {
        bits: 3,
        first_last_bits: 8,
        plus: true,
        per_channel: true,
    };
    let mut cpu_model = Mlp::new(CpuEngine, config(Some(spec), 3)).unwrap();
    let before = cpu_model.evaluate(&train).unwrap().loss;
    let losses = cpu_model.fit(&train).unwrap();
    // Three epochs of Adam on 400 digits, quantized at 3 bits from a random start: the loss
    // falls every epoch and ends below 70% of where it began (it reaches about 65%).
    let falls = |l: &[f64], first: f64| {
        l[0] < first && l.windows(2).all(|w| w[1] < w[0]) && l[2] < 0.7 * first
    };
    assert!(falls(&losses, before), "cpu: loss {before} -> {losses:?}");
    if let Some(ctx) = gpu() {
        let mut m = Mlp::new(GpuEngine::new(ctx), config(Some(spec), 3)).unwrap();
        let before_gpu = m.evaluate(&train).unwrap().loss;
        // Same initial weights and the first batch's quantizer initialisation: same loss.
        assert!(
            (before_gpu - before).abs() < 1e-3 * before,
            "initial loss gpu {before_gpu} cpu {before}"
        );
        let gl = m.fit(&train).unwrap();
        assert!(falls(&gl, before_gpu), "gpu: loss {before_gpu} -> {gl:?}");
    }
}

#[test]
fn gpu_training_is_bit_identical_across_runs() {
    let Some(ctx) = gpu() else { return };
    let (train, _) = small_data();
    let spec = QuantSpec {
        bits: 2,
        first_last_bits: 8,
        plus: false,
        per_channel: false,
    };
    let run = || {
        let mut m = Mlp::new(GpuEngine::new(ctx), config(Some(spec), 1)).unwrap();
        m.fit(&train).unwrap();
        let w: Vec<u32> = m
            .weights()
            .unwrap()
            .iter()
            .flat_map(|(w, b)| w.iter().chain(b).map(|x| x.to_bits()).collect::<Vec<_>>())
            .collect();
        let s: Vec<u32> = m
            .steps()
            .unwrap()
            .iter()
            .flat_map(|(w, a, b)| {
                w.iter()
                    .chain([a, b])
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>()
            })
            .collect();
        (w, s)
    };
    assert_eq!(run(), run());
}
