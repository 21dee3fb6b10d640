//! Quantization-aware training with LSQ / LSQ+ (Esser et al. 2020; Bhalgat et al. 2020):
//! a small multilayer perceptron (dense layers, ReLU, softmax cross-entropy) whose weights,
//! activations, gradients and step sizes live on the device, with an LSQ quantizer on every
//! layer's weights and input activations, trained by SGD with momentum or Adam under a cosine
//! learning-rate schedule. Written once against [`engine::Engine`], so the same model runs
//! on the GPU and, as its twin, on the CPU.

pub mod data;
pub mod engine;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Uniform};

use crate::error::{Error, Result};
use crate::kernel::lsq::{LsqConfig, StepInit};
use crate::kernel::optimizer::{Rule, Update};
use crate::quant::weq::WeqActivation;
use data::Dataset;
use engine::{Engine, LsqBackward, QuantState};

/// Which quantizers the model has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantSpec {
    /// Bits of the hidden layers' weights and input activations.
    pub bits: u32,
    /// Bits of the first and last layers (8 in the LSQ paper).
    pub first_last_bits: u32,
    /// LSQ+: a learnable offset on activations and LSQ+ initialisation.
    pub plus: bool,
    /// One weight step per output channel instead of per layer.
    pub per_channel: bool,
}

/// Model and training settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Widths from input to output, e.g. `[64, 128, 64, 10]`.
    pub widths: Vec<usize>,
    /// Quantizers, or `None` for a float model.
    pub quant: Option<QuantSpec>,
    /// Optimizer.
    pub rule: Rule,
    /// Peak learning rate (cosine decay to 0 over the run).
    pub lr: f32,
    /// L2 weight decay on weights (not on steps, offsets or biases).
    pub weight_decay: f32,
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Seed of the initial weights and the shuffles.
    pub seed: u64,
}

/// An LSQ quantizer and its optimizer state.
struct Quantizer<T> {
    cfg: LsqConfig,
    group_len: usize,
    state: QuantState<T>,
    opt: [T; 4],
    activation: bool,
    plus: bool,
    ready: bool,
}

/// A weighted-entropy log quantizer of a layer's input activations: no learnable parameters,
/// calibrated on the first batch it sees; straight-through gradient.
struct WeqAct<T> {
    bits: u32,
    /// One `WeqActResult` (u32 words).
    record: T,
    ready: bool,
}

/// One dense layer `z = Q(a)·Q(W)ᵀ + b`.
struct Layer<T> {
    w: T,
    b: T,
    grad_w: T,
    grad_b: T,
    opt_w: [T; 2],
    opt_b: [T; 2],
    weight_q: Option<Quantizer<T>>,
    input_q: Option<Quantizer<T>>,
    input_weq: Option<WeqAct<T>>,
    inputs: usize,
    outputs: usize,
}

/// What the forward pass keeps for the backward pass, per layer.
struct Saved<T> {
    input: T,
    input_hat: T,
    weight_hat: T,
    z: T,
}

/// Loss and accuracy over a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
}

/// A multilayer perceptron with optional LSQ quantizers, on one engine.
pub struct Mlp<E: Engine> {
    engine: E,
    layers: Vec<Layer<E::T>>,
    cfg: TrainConfig,
    step: u32,
}

/// Steps never go below this, so a quantizer cannot collapse.
const MIN_STEP: f32 = 1e-6;

impl<E: Engine> Mlp<E> {
    /// A model with He-uniform initial weights drawn from `cfg.seed`.
    pub fn new(engine: E, cfg: TrainConfig) -> Result<Self> {
        if cfg.widths.len() < 2 || cfg.widths.contains(&0) {
            return Err(Error::param(
                "qat",
                format!("widths {:?} need an input and an output", cfg.widths),
            ));
        }
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut weights = Vec::new();
        for pair in cfg.widths.windows(2) {
            let bound = (6.0 / pair[0] as f32).sqrt();
            let dist =
                Uniform::new(-bound, bound).map_err(|e| Error::param("qat", e.to_string()))?;
            let w: Vec<f32> = (0..pair[0] * pair[1])
                .map(|_| dist.sample(&mut rng))
                .collect();
            weights.push((w, vec![0.0; pair[1]]));
        }
        Self::with_weights(engine, cfg, &weights)
    }

    /// A model with the given weights and biases per layer (W as outputs × inputs).
    pub fn with_weights(
        mut engine: E,
        cfg: TrainConfig,
        weights: &[(Vec<f32>, Vec<f32>)],
    ) -> Result<Self> {
        let n = cfg.widths.len() - 1;
        if weights.len() != n {
            return Err(Error::shape(
                "qat",
                format!("{} weight sets for {n} layers", weights.len()),
            ));
        }
        let mut layers = Vec::with_capacity(n);
        for (l, (w, b)) in weights.iter().enumerate() {
            let (inputs, outputs) = (cfg.widths[l], cfg.widths[l + 1]);
            if w.len() != inputs * outputs || b.len() != outputs {
                return Err(Error::shape(
                    "qat",
                    format!("layer {l}: weights for {outputs}×{inputs}"),
                ));
            }
            let zeros = |e: &mut E, s: &[usize]| e.zeros(s);
            let layer = Layer {
                w: engine.upload(w, &[outputs, inputs])?,
                b: engine.upload(b, &[outputs])?,
                grad_w: zeros(&mut engine, &[outputs, inputs])?,
                grad_b: zeros(&mut engine, &[1, outputs])?,
                opt_w: [
                    zeros(&mut engine, &[outputs, inputs])?,
                    zeros(&mut engine, &[outputs, inputs])?,
                ],
                opt_b: [
                    zeros(&mut engine, &[outputs])?,
                    zeros(&mut engine, &[outputs])?,
                ],
                weight_q: None,
                input_q: None,
                input_weq: None,
                inputs,
                outputs,
            };
            layers.push(layer);
        }
        let mut model = Self {
            engine,
            layers,
            cfg,
            step: 0,
        };
        if let Some(spec) = model.cfg.quant {
            model.add_quantizers(spec)?;
        }
        Ok(model)
    }

    fn quantizer(
        &mut self,
        cfg: LsqConfig,
        groups: usize,
        group_len: usize,
        activation: bool,
        plus: bool,
    ) -> Result<Quantizer<E::T>> {
        let e = &mut self.engine;
        Ok(Quantizer {
            cfg,
            group_len,
            state: QuantState {
                step: e.zeros(&[groups])?,
                beta: e.zeros(&[groups])?,
                grad_step: e.zeros(&[groups])?,
                grad_beta: e.zeros(&[groups])?,
            },
            opt: [
                e.zeros(&[groups])?,
                e.zeros(&[groups])?,
                e.zeros(&[groups])?,
                e.zeros(&[groups])?,
            ],
            activation,
            plus,
            ready: false,
        })
    }

    /// Adds LSQ quantizers to every layer and initialises the weight steps from the weights.
    fn add_quantizers(&mut self, spec: QuantSpec) -> Result<()> {
        let n = self.layers.len();
        for l in 0..n {
            let bits = if l == 0 || l == n - 1 {
                spec.first_last_bits
            } else {
                spec.bits
            };
            let (inputs, outputs) = (self.layers[l].inputs, self.layers[l].outputs);
            let wcfg = LsqConfig::new(bits, true)?;
            let (groups, group_len) = if spec.per_channel {
                (outputs, inputs)
            } else {
                (1, inputs * outputs)
            };
            let mut wq = self.quantizer(wcfg, groups, group_len, false, spec.plus)?;
            let init = if spec.plus {
                StepInit::LsqPlusWeights
            } else {
                StepInit::Lsq
            };
            let w = self.layers[l].w.clone();
            self.engine
                .lsq_init(&wq.cfg, init, &w, group_len, &wq.state)?;
            wq.ready = true;
            // Activations: one step per layer; the gradient scale counts features per step
            // (LSQ §2.2), not the batch.
            let mut acfg = LsqConfig::new(bits, false)?;
            acfg.grad_scale = Some(1.0 / ((inputs as f32) * acfg.qp()).sqrt());
            let aq = self.quantizer(acfg, 1, 0, true, spec.plus)?;
            self.layers[l].weight_q = Some(wq);
            self.layers[l].input_q = Some(aq);
        }
        self.engine.flush()
    }

    /// Replaces the LSQ quantizers of the hidden layers' input activations (the outputs of
    /// ReLU; not the first layer's raw features) by weighted-entropy log quantizers at the same
    /// bits (`quant::weq::activation`: ReLU merged, levels 2^((o + j·step)/16) chosen on the
    /// first training batch). Their gradient is straight-through: ReLU's mask, applied by the
    /// ReLU backward that follows. Needs a quantized model.
    pub fn weq_activations(mut self) -> Result<Self> {
        let Some(spec) = self.cfg.quant else {
            return Err(Error::param(
                "qat",
                "WEQ activations need a quantized model (TrainConfig::quant)",
            ));
        };
        let n = self.layers.len();
        for l in 1..n {
            let bits = if l == n - 1 {
                spec.first_last_bits
            } else {
                spec.bits
            };
            let record = self.engine.upload_u32(&[0; 8])?;
            let layer = &mut self.layers[l];
            layer.input_q = None;
            layer.input_weq = Some(WeqAct {
                bits,
                record,
                ready: false,
            });
        }
        Ok(self)
    }

    /// Every calibrated WEQ activation quantizer, with its layer.
    pub fn weq_activation_quantizers(&mut self) -> Result<Vec<(usize, WeqActivation)>> {
        let mut out = Vec::new();
        for l in 0..self.layers.len() {
            let Some(q) = &self.layers[l].input_weq else {
                continue;
            };
            if !q.ready {
                continue;
            }
            let (bits, record) = (q.bits, q.record.clone());
            let w = self.engine.read_u32(&record)?;
            out.push((l, WeqActivation::new(bits, w[0], w[1] as i32)?));
        }
        Ok(out)
    }

    /// The engine (for reading tensors back).
    pub fn engine(&mut self) -> &mut E {
        &mut self.engine
    }

    /// Forward pass over a batch `x` (rows × inputs); returns the logits and what backward
    /// needs. Activation quantizers not yet initialised are initialised from this batch.
    fn forward(&mut self, x: &E::T, rows: usize) -> Result<(E::T, Vec<Saved<E::T>>)> {
        let mut a = x.clone();
        let mut saved = Vec::with_capacity(self.layers.len());
        let last = self.layers.len() - 1;
        for l in 0..self.layers.len() {
            let (inputs, outputs) = (self.layers[l].inputs, self.layers[l].outputs);
            let e = &mut self.engine;
            let layer = &mut self.layers[l];
            let input_hat = match &mut layer.input_q {
                Some(q) => {
                    if !q.ready {
                        if q.plus {
                            e.lsq_init_mse(&q.cfg, &a, &q.state)?;
                        } else {
                            e.lsq_init(&q.cfg, StepInit::Lsq, &a, rows * inputs, &q.state)?;
                        }
                        q.ready = true;
                    }
                    let out = e.zeros(&[rows, inputs])?;
                    e.lsq_forward(&q.cfg, &a, rows * inputs, &q.state, &out)?;
                    out
                }
                None => match &mut layer.input_weq {
                    Some(q) => {
                        if !q.ready {
                            e.weq_act_calibrate(q.bits, &a, &q.record)?;
                            q.ready = true;
                        }
                        let out = e.zeros(&[rows, inputs])?;
                        e.weq_act_forward(q.bits, &q.record, &a, &out)?;
                        out
                    }
                    None => a.clone(),
                },
            };
            let weight_hat = match &layer.weight_q {
                Some(q) => {
                    let out = e.zeros(&[outputs, inputs])?;
                    e.lsq_forward(&q.cfg, &layer.w, q.group_len, &q.state, &out)?;
                    out
                }
                None => layer.w.clone(),
            };
            let z = e.zeros(&[rows, outputs])?;
            e.matmul(
                &input_hat,
                false,
                &weight_hat,
                true,
                Some(&layer.b),
                &z,
                false,
            )?;
            let next = if l < last {
                let y = e.zeros(&[rows, outputs])?;
                e.relu(&z, &y)?;
                y
            } else {
                z.clone()
            };
            saved.push(Saved {
                input: a,
                input_hat,
                weight_hat,
                z,
            });
            a = next;
        }
        Ok((a, saved))
    }

    /// Backward pass from ∂L/∂logits, filling every gradient.
    fn backward(&mut self, mut dz: E::T, saved: &[Saved<E::T>], rows: usize) -> Result<()> {
        let ones = self.engine.upload(&vec![1.0; rows], &[1, rows])?;
        for l in (0..self.layers.len()).rev() {
            let s = &saved[l];
            let e = &mut self.engine;
            let layer = &mut self.layers[l];
            let (inputs, outputs) = (layer.inputs, layer.outputs);
            // ∂L/∂Ŵ = dzᵀ·â, ∂L/∂b = 1ᵀ·dz, ∂L/∂â = dz·Ŵ.
            let grad_what = e.zeros(&[outputs, inputs])?;
            e.matmul(&dz, true, &s.input_hat, false, None, &grad_what, false)?;
            e.matmul(&ones, false, &dz, false, None, &layer.grad_b, false)?;
            let needs_input_grad = l > 0 || layer.input_q.is_some() || layer.input_weq.is_some();
            let grad_ahat = e.zeros(&[rows, inputs])?;
            if needs_input_grad {
                e.matmul(&dz, false, &s.weight_hat, false, None, &grad_ahat, false)?;
            }
            match &layer.weight_q {
                Some(q) => {
                    let scratch = e.zeros(&[outputs, inputs])?;
                    let t = LsqBackward {
                        v: &layer.w,
                        grad_vhat: &grad_what,
                        grad_v: &layer.grad_w,
                        vhat: &scratch,
                    };
                    e.lsq_backward(&q.cfg, q.group_len, &q.state, &t)?;
                }
                None => layer.grad_w = grad_what,
            }
            let grad_a = match &layer.input_q {
                Some(q) => {
                    let (ga, scratch) = (e.zeros(&[rows, inputs])?, e.zeros(&[rows, inputs])?);
                    let t = LsqBackward {
                        v: &s.input,
                        grad_vhat: &grad_ahat,
                        grad_v: &ga,
                        vhat: &scratch,
                    };
                    e.lsq_backward(&q.cfg, rows * inputs, &q.state, &t)?;
                    ga
                }
                None => grad_ahat,
            };
            if l > 0 {
                let prev = e.zeros(&[rows, inputs])?;
                e.relu_backward(&saved[l - 1].z, &grad_a, &prev)?;
                dz = prev;
            }
        }
        Ok(())
    }

    /// Applies one optimizer update with learning rate `lr` to every parameter.
    fn apply(&mut self, lr: f32) -> Result<()> {
        self.step += 1;
        let base = Update {
            rule: self.cfg.rule,
            t: self.step,
            lr,
            weight_decay: 0.0,
            floor: None,
        };
        let wd = Update {
            weight_decay: self.cfg.weight_decay,
            ..base
        };
        let step_rule = Update {
            floor: Some(MIN_STEP),
            ..base
        };
        let e = &mut self.engine;
        for layer in &mut self.layers {
            e.update(
                &wd,
                &layer.w,
                &layer.grad_w,
                &layer.opt_w[0],
                &layer.opt_w[1],
            )?;
            let gb = layer.grad_b.clone();
            e.update(&base, &layer.b, &gb, &layer.opt_b[0], &layer.opt_b[1])?;
            for q in [&layer.weight_q, &layer.input_q].into_iter().flatten() {
                let st = &q.state;
                e.update(&step_rule, &st.step, &st.grad_step, &q.opt[0], &q.opt[1])?;
                // Only LSQ+ activations learn an offset; weights stay symmetric.
                if q.plus && q.activation {
                    e.update(&base, &st.beta, &st.grad_beta, &q.opt[2], &q.opt[3])?;
                }
            }
        }
        Ok(())
    }

    /// Trains on `train` for the configured epochs; returns the loss on `train` after each
    /// epoch (read back once per epoch, never inside a step).
    pub fn fit(&mut self, train: &Dataset) -> Result<Vec<f64>> {
        let (n, f) = (train.len(), train.features);
        if f != self.cfg.widths[0] || train.classes != *self.cfg.widths.last().unwrap_or(&0) {
            return Err(Error::shape(
                "qat",
                "dataset features or classes differ from the model",
            ));
        }
        let batch = self.cfg.batch.clamp(1, n.max(1));
        let steps_per_epoch = n.div_ceil(batch);
        let total = (steps_per_epoch * self.cfg.epochs).max(1);
        let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ 0x5eed);
        let x_dev = self.engine.upload(&train.x, &[n, f])?;
        let mut losses = Vec::with_capacity(self.cfg.epochs);
        let mut order: Vec<usize> = (0..n).collect();
        let mut t = 0usize;
        for _ in 0..self.cfg.epochs {
            order.shuffle(&mut rng);
            let shuffled = train.select(&order);
            self.engine.write(&x_dev, &shuffled.x)?;
            let y_now = self.engine.upload_u32(&shuffled.y)?;
            for s in 0..steps_per_epoch {
                let first = s * batch;
                let rows = batch.min(n - first);
                let xb = self.engine.rows(&x_dev, first, rows)?;
                let yb = self.engine.rows(&y_now, first, rows)?;
                let (logits, saved) = self.forward(&xb, rows)?;
                let classes = self.layers[self.layers.len() - 1].outputs;
                let e = &mut self.engine;
                let (grad, loss, correct) = (
                    e.zeros(&[rows, classes])?,
                    e.zeros(&[rows])?,
                    e.upload_u32(&vec![0; rows])?,
                );
                e.xent(&logits, &yb, &grad, &loss, &correct)?;
                self.backward(grad, &saved, rows)?;
                // Cosine schedule (Loshchilov & Hutter 2017) from lr to 0 over the run.
                let lr = self.cfg.lr
                    * 0.5
                    * (1.0 + (std::f32::consts::PI * t as f32 / total as f32).cos());
                self.apply(lr)?;
                self.engine.flush()?;
                t += 1;
            }
            losses.push(self.evaluate(train)?.loss);
        }
        Ok(losses)
    }

    /// Loss and accuracy on `data`, with the quantizers as they are.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Metrics> {
        let n = data.len();
        if n == 0 {
            return Ok(Metrics {
                loss: 0.0,
                accuracy: 0.0,
            });
        }
        let x = self.engine.upload(&data.x, &[n, data.features])?;
        let y = self.engine.upload_u32(&data.y)?;
        let (logits, _) = self.forward(&x, n)?;
        let classes = data.classes;
        let e = &mut self.engine;
        let (grad, loss, correct) = (
            e.zeros(&[n, classes])?,
            e.zeros(&[n])?,
            e.upload_u32(&vec![0; n])?,
        );
        e.xent(&logits, &y, &grad, &loss, &correct)?;
        let losses = e.read(&loss)?;
        let hits = e.read_u32(&correct)?;
        Ok(Metrics {
            loss: losses.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64,
            accuracy: hits.iter().filter(|&&h| h == 1).count() as f64 / n as f64,
        })
    }

    /// Weights and biases per layer, read back (to start a quantized model from a float one).
    pub fn weights(&mut self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let mut out = Vec::new();
        for l in 0..self.layers.len() {
            let (w, b) = (self.layers[l].w.clone(), self.layers[l].b.clone());
            out.push((self.engine.read(&w)?, self.engine.read(&b)?));
        }
        Ok(out)
    }

    /// The current steps (and offsets) of every quantizer: per layer (weight steps, input
    /// step, input offset).
    pub fn steps(&mut self) -> Result<Vec<(Vec<f32>, f32, f32)>> {
        let mut out = Vec::new();
        for l in 0..self.layers.len() {
            let (Some(wq), Some(aq)) = (&self.layers[l].weight_q, &self.layers[l].input_q) else {
                continue;
            };
            let (ws, a_s, a_b) = (
                wq.state.step.clone(),
                aq.state.step.clone(),
                aq.state.beta.clone(),
            );
            let ws = self.engine.read(&ws)?;
            let a_s = self.engine.read(&a_s)?;
            let a_b = self.engine.read(&a_b)?;
            out.push((ws, a_s[0], a_b[0]));
        }
        Ok(out)
    }
}
