//! The WEQ log quantizer of activations as the activation quantizer of the QAT trainer
//! (`Mlp::weq_activations`): training lowers the loss on both backends, the quantizers are
//! calibrated on the first batch, and GPU training repeats bit for bit.

mod common;

use common::gpu;
use wgquant::kernel::optimizer::Rule;
use wgquant::qat::data::{Dataset, digits, digits_path};
use wgquant::qat::engine::{CpuEngine, GpuEngine};
use wgquant::qat::{Mlp, QuantSpec, TrainConfig};

fn small_data() -> (Dataset, Dataset) {
    let data = digits(&digits_path()).expect("data/digits.csv.gz is in the repository");
    let (train, test) = data.split(0.2, 7);
    (train.select(&(0..400).collect::<Vec<_>>()), test)
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        widths: vec![64, 32, 10],
        quant: Some(QuantSpec {
            bits: 3,
            first_last_bits: 8,
            plus: false,
            per_channel: false,
        }),
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

/// Three epochs of Adam on 400 digits: the loss falls every epoch and ends below this
/// fraction of where it began (LSQ activations reach about 65% in tests/lsq.rs; the log
/// quantizer is not trained, so allow a little more).
const LOSS_END_FRACTION: f64 = 0.75;

#[test]
fn training_with_weq_activations_lowers_the_loss() {
    let (train, test) = small_data();
    let falls = |l: &[f64], first: f64| {
        l[0] < first && l.windows(2).all(|w| w[1] < w[0]) && l[2] < LOSS_END_FRACTION * first
    };
    let mut cpu = Mlp::new(CpuEngine, config(3))
        .unwrap()
        .weq_activations()
        .unwrap();
    let before = cpu.evaluate(&train).unwrap().loss;
    let losses = cpu.fit(&train).unwrap();
    assert!(falls(&losses, before), "cpu: loss {before} -> {losses:?}");
    let q = cpu.weq_activation_quantizers().unwrap();
    // Layer 1's input (the hidden ReLU outputs), at the last layer's 8 bits.
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0].0 == 1 && q[0].1.bits == 8, "{q:?}");
    common::say(&format!(
        "qat with WEQ activations (cpu): loss {before:.3} -> {losses:?}, test accuracy {:.3}, \
         quantizers {q:?}",
        cpu.evaluate(&test).unwrap().accuracy
    ));
    if let Some(ctx) = gpu() {
        let run = || {
            let mut m = Mlp::new(GpuEngine::new(ctx), config(3))
                .unwrap()
                .weq_activations()
                .unwrap();
            let before = m.evaluate(&train).unwrap().loss;
            let losses = m.fit(&train).unwrap();
            let q = m.weq_activation_quantizers().unwrap();
            (before, losses, q)
        };
        let (b, l, q) = run();
        assert!(
            (b - before).abs() < 1e-3 * before,
            "initial loss gpu {b} cpu {before}"
        );
        assert!(falls(&l, b), "gpu: loss {b} -> {l:?}");
        assert_eq!(q.len(), 1, "{q:?}");
        // Deterministic: the same bits on a second run.
        let (b2, l2, q2) = run();
        assert_eq!((b.to_bits(), q), (b2.to_bits(), q2));
        assert_eq!(
            l.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            l2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn weq_activations_need_a_quantized_model() {
    let mut cfg = config(1);
    cfg.quant = None;
    assert!(Mlp::new(CpuEngine, cfg).unwrap().weq_activations().is_err());
}
