//! LSQ quantization-aware training on the UCI handwritten digits (data/digits.csv.gz,
//! CC BY 4.0): an fp32 MLP first, then LSQ fine-tuning from it at 2, 3, 4 and 8 bits for
//! weights and activations (first and last layers at 8 bits, as in the LSQ paper), with a
//! fixed held-out split. Everything trains on the GPU (or the CPU with `--cpu`).
//!
//! cargo run --release --example lsq_qat [-- --json] [--plus] [--cpu] [--epochs N]

use wgquant::gpu::Context;
use wgquant::kernel::optimizer::Rule;
use wgquant::qat::data::{Dataset, digits, digits_path};
use wgquant::qat::engine::{CpuEngine, Engine, GpuEngine};
use wgquant::qat::{Mlp, QuantSpec, TrainConfig};

struct Args {
    json: bool,
    plus: bool,
    cpu: bool,
    epochs: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        plus: false,
        cpu: false,
        epochs: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => a.json = true,
            "--plus" => a.plus = true,
            "--cpu" => a.cpu = true,
            "--epochs" => {
                a.epochs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--epochs needs a number")?;
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(a)
}

/// One row of the result table.
struct Row {
    bits: u32,
    accuracy: f64,
    steps: String,
}

fn fp32_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        widths: vec![64, 128, 64, 10],
        quant: None,
        rule: Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        lr: 2e-3,
        weight_decay: 1e-4,
        epochs,
        batch: 32,
        seed: 2026,
    }
}

/// Fine-tuning as the LSQ paper does it: from the float weights, SGD with momentum and a
/// cosine schedule, a lower learning rate, half the epochs.
fn lsq_config(bits: u32, plus: bool, epochs: usize) -> TrainConfig {
    TrainConfig {
        quant: Some(QuantSpec {
            bits,
            first_last_bits: 8,
            plus,
            per_channel: false,
        }),
        rule: Rule::Sgd { momentum: 0.9 },
        lr: 0.01,
        weight_decay: 1e-4,
        epochs: epochs.div_ceil(2),
        ..fp32_config(epochs)
    }
}

fn run<E: Engine>(
    make: impl Fn() -> E,
    args: &Args,
    train: &Dataset,
    test: &Dataset,
) -> wgquant::Result<(f64, Vec<Row>)> {
    let mut fp32 = Mlp::new(make(), fp32_config(args.epochs))?;
    fp32.fit(train)?;
    let fp32_acc = fp32.evaluate(test)?.accuracy;
    let weights = fp32.weights()?;
    if !args.json {
        println!("fp32: test accuracy {:.2}%", 100.0 * fp32_acc);
    }
    let mut rows = Vec::new();
    for bits in [2u32, 3, 4, 8] {
        let mut q = Mlp::with_weights(make(), lsq_config(bits, args.plus, args.epochs), &weights)?;
        q.fit(train)?;
        let accuracy = q.evaluate(test)?.accuracy;
        let steps = q
            .steps()?
            .iter()
            .map(|(w, a, b)| {
                if args.plus {
                    format!("w {:.4} a {:.4}/β {:.3}", w[0], a, b)
                } else {
                    format!("w {:.4} a {:.4}", w[0], a)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        if !args.json {
            println!(
                "LSQ{} {bits}-bit: test accuracy {:.2}%",
                if args.plus { "+" } else { "" },
                100.0 * accuracy
            );
        }
        rows.push(Row {
            bits,
            accuracy,
            steps,
        });
    }
    Ok((fp32_acc, rows))
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lsq_qat: {e}");
            std::process::exit(2);
        }
    };
    let result = (|| -> wgquant::Result<(f64, Vec<Row>, String)> {
        let data = digits(&digits_path())?;
        let (train, test) = data.split(0.2, 7);
        if args.cpu {
            let (f, r) = run(|| CpuEngine, &args, &train, &test)?;
            Ok((
                f,
                r,
                format!("cpu ({} threads)", rayon::current_num_threads()),
            ))
        } else {
            let ctx = Context::new()?;
            let (f, r) = run(|| GpuEngine::new(&ctx), &args, &train, &test)?;
            Ok((f, r, ctx.adapter_summary()))
        }
    })();
    let (fp32, rows, device) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lsq_qat: {e}");
            std::process::exit(1);
        }
    };
    if args.json {
        let lsq: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|r| (r.bits.to_string(), serde_json::json!(r.accuracy)))
            .collect();
        println!("{}", serde_json::json!({ "fp32": fp32, "lsq": lsq }));
        return;
    }
    println!();
    println!(
        "digits, {} held-out images, trained on {device}",
        (1797.0f64 * 0.2).round()
    );
    println!(
        "{:>5} {:>14} {:>14}  final steps (per layer)",
        "bits", "test accuracy", "fp32 accuracy"
    );
    for r in &rows {
        println!(
            "{:>5} {:>13.2}% {:>13.2}%  {}",
            r.bits,
            100.0 * r.accuracy,
            100.0 * fp32,
            r.steps
        );
    }
}
