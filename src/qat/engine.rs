//! The operations the trainer needs, on either backend: [`GpuEngine`] records library
//! kernels into one command encoder per step, [`CpuEngine`] runs their CPU twins. The
//! trainer is written once against [`Engine`].

use std::cell::RefCell;
use std::rc::Rc;

use crate::cpu;
use crate::cpu::matmul::Mat;
use crate::cpu::weq_act_sweep::WeqActResult;
use crate::error::{Error, Result};
use crate::gpu::lsq::{LsqConfig, LsqGrads};
use crate::gpu::matmul::Operand;
use crate::gpu::softmax_xent::XentOut;
use crate::gpu::{self, Context, ElemType, GpuTensor};
use crate::kernel::lsq::StepInit;
use crate::kernel::optimizer::Update;
use crate::quant::uniform::{Calibration, UniformConfig};
use crate::quant::weq::activation::{self, WeqActBuffers};

/// The per-group tensors of an LSQ quantizer: steps and offsets with their gradients.
#[derive(Clone, Debug)]
pub struct QuantState<T> {
    /// Steps s.
    pub step: T,
    /// Offsets β.
    pub beta: T,
    /// ∂L/∂s.
    pub grad_step: T,
    /// ∂L/∂β.
    pub grad_beta: T,
}

/// Element-wise tensors of one LSQ backward pass.
pub struct LsqBackward<'a, T> {
    /// The quantizer's input v.
    pub v: &'a T,
    /// ∂L/∂v̂.
    pub grad_vhat: &'a T,
    /// ∂L/∂v (out).
    pub grad_v: &'a T,
    /// v̂ (out).
    pub vhat: &'a T,
}

/// Everything the trainer does to tensors.
pub trait Engine {
    /// A tensor handle (cheap to clone; clones share storage).
    type T: Clone;
    /// A zero f32 tensor.
    fn zeros(&mut self, shape: &[usize]) -> Result<Self::T>;
    /// An f32 tensor from host data.
    fn upload(&mut self, data: &[f32], shape: &[usize]) -> Result<Self::T>;
    /// A u32 tensor from host data.
    fn upload_u32(&mut self, data: &[u32]) -> Result<Self::T>;
    /// Overwrites an f32 tensor with host data.
    fn write(&mut self, t: &Self::T, data: &[f32]) -> Result<()>;
    /// Reads an f32 tensor back (finishing pending work).
    fn read(&mut self, t: &Self::T) -> Result<Vec<f32>>;
    /// Reads a u32 tensor back.
    fn read_u32(&mut self, t: &Self::T) -> Result<Vec<u32>>;
    /// Rows `[first, first + count)` of a 2-D tensor, sharing storage.
    fn rows(&mut self, t: &Self::T, first: usize, count: usize) -> Result<Self::T>;
    /// `c (+)= op(a)·op(b) (+ bias)`.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &mut self,
        a: &Self::T,
        ta: bool,
        b: &Self::T,
        tb: bool,
        bias: Option<&Self::T>,
        c: &Self::T,
        acc: bool,
    ) -> Result<()>;
    /// `y = max(x, 0)`.
    fn relu(&mut self, x: &Self::T, y: &Self::T) -> Result<()>;
    /// `dx = dy·[x > 0]`.
    fn relu_backward(&mut self, x: &Self::T, dy: &Self::T, dx: &Self::T) -> Result<()>;
    /// Softmax cross-entropy: gradient of the mean loss, per-row loss and correctness.
    fn xent(
        &mut self,
        logits: &Self::T,
        labels: &Self::T,
        grad: &Self::T,
        loss: &Self::T,
        correct: &Self::T,
    ) -> Result<()>;
    /// LSQ forward.
    fn lsq_forward(
        &mut self,
        cfg: &LsqConfig,
        v: &Self::T,
        group_len: usize,
        q: &QuantState<Self::T>,
        vhat: &Self::T,
    ) -> Result<()>;
    /// LSQ fused backward; fills `q.grad_step`, `q.grad_beta`.
    fn lsq_backward(
        &mut self,
        cfg: &LsqConfig,
        group_len: usize,
        q: &QuantState<Self::T>,
        t: &LsqBackward<'_, Self::T>,
    ) -> Result<()>;
    /// Step initialisation from values (β = 0).
    fn lsq_init(
        &mut self,
        cfg: &LsqConfig,
        init: StepInit,
        v: &Self::T,
        group_len: usize,
        q: &QuantState<Self::T>,
    ) -> Result<()>;
    /// LSQ+ activation initialisation: (s, β) of the asymmetric affine quantizer with the least
    /// squared error on `v` (per tensor).
    fn lsq_init_mse(&mut self, cfg: &LsqConfig, v: &Self::T, q: &QuantState<Self::T>)
    -> Result<()>;
    /// One optimizer update.
    fn update(
        &mut self,
        u: &Update,
        w: &Self::T,
        grad: &Self::T,
        m: &Self::T,
        v: &Self::T,
    ) -> Result<()>;
    /// Calibrates a weighted-entropy log quantizer of activations at `bits` on `x` into
    /// `record` (a u32 tensor of one `WeqActResult`; `quant::weq::activation`).
    fn weq_act_calibrate(&mut self, bits: u32, x: &Self::T, record: &Self::T) -> Result<()>;
    /// Its forward (ReLU merged) with the step and offset in `record`.
    fn weq_act_forward(
        &mut self,
        bits: u32,
        record: &Self::T,
        x: &Self::T,
        y: &Self::T,
    ) -> Result<()>;
    /// Finishes the work recorded so far (a training step's end).
    fn flush(&mut self) -> Result<()>;
}

/// The affine scheme whose MSE-optimal range seeds LSQ+'s activation (s, β).
fn mse_config(cfg: &LsqConfig) -> Result<UniformConfig> {
    Ok(UniformConfig {
        scheme: crate::affine::AffineScheme::new(cfg.bits, crate::affine::AffineMode::Asymmetric)?,
        granularity: crate::format::Granularity::Tensor,
        calibration: Calibration::Mse,
    })
}

/// Records everything into one encoder per step on a device.
pub struct GpuEngine {
    ctx: Context,
    encoder: Option<wgpu::CommandEncoder>,
}

impl GpuEngine {
    /// An engine on `ctx`.
    pub fn new(ctx: &Context) -> Self {
        Self {
            ctx: ctx.clone(),
            encoder: None,
        }
    }

    fn enc(&mut self) -> &mut wgpu::CommandEncoder {
        let device = self.ctx.device().clone();
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("qat step"),
            })
        })
    }

    /// Runs `f` with the context and the pending encoder.
    fn rec(
        &mut self,
        f: impl FnOnce(&Context, &mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        f(&ctx, self.enc())
    }
}

impl Engine for GpuEngine {
    type T = GpuTensor;

    fn zeros(&mut self, shape: &[usize]) -> Result<GpuTensor> {
        GpuTensor::zeros(&self.ctx, shape, ElemType::F32)
    }
    fn upload(&mut self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        GpuTensor::from_f32(&self.ctx, data, shape)
    }
    fn upload_u32(&mut self, data: &[u32]) -> Result<GpuTensor> {
        GpuTensor::from_u32(&self.ctx, data, &[data.len()])
    }
    fn write(&mut self, t: &GpuTensor, data: &[f32]) -> Result<()> {
        // Work recorded before must run before the overwrite lands.
        self.flush()?;
        t.write(&self.ctx, data)
    }
    fn read(&mut self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.flush()?;
        t.to_f32(&self.ctx)
    }
    fn read_u32(&mut self, t: &GpuTensor) -> Result<Vec<u32>> {
        self.flush()?;
        t.to_u32(&self.ctx)
    }
    fn rows(&mut self, t: &GpuTensor, first: usize, count: usize) -> Result<GpuTensor> {
        // A copy, not a view: kernels that index several tensors with one base need them
        // aligned alike, and a view at an arbitrary row is not.
        let cols: usize = t.shape()[1..].iter().product();
        let mut shape = t.shape().to_vec();
        shape[0] = count;
        let view = t.slice(first * cols, &shape)?;
        let out = GpuTensor::zeros(&self.ctx, &shape, t.dtype())?;
        let bytes = view.byte_len();
        if bytes > 0 {
            self.enc()
                .copy_buffer_to_buffer(view.buffer(), view.offset(), out.buffer(), 0, bytes);
        }
        Ok(out)
    }
    fn matmul(
        &mut self,
        a: &GpuTensor,
        ta: bool,
        b: &GpuTensor,
        tb: bool,
        bias: Option<&GpuTensor>,
        c: &GpuTensor,
        acc: bool,
    ) -> Result<()> {
        let (oa, ob) = (
            Operand {
                tensor: a,
                transposed: ta,
            },
            Operand {
                tensor: b,
                transposed: tb,
            },
        );
        self.rec(|ctx, enc| gpu::matmul::encode(ctx, enc, oa, ob, bias, c, acc))
    }
    fn relu(&mut self, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
        self.rec(|ctx, enc| gpu::relu::encode_forward(ctx, enc, x, y))
    }
    fn relu_backward(&mut self, x: &GpuTensor, dy: &GpuTensor, dx: &GpuTensor) -> Result<()> {
        self.rec(|ctx, enc| gpu::relu::encode_backward(ctx, enc, x, dy, dx))
    }
    fn xent(
        &mut self,
        logits: &GpuTensor,
        labels: &GpuTensor,
        grad: &GpuTensor,
        loss: &GpuTensor,
        correct: &GpuTensor,
    ) -> Result<()> {
        let out = XentOut {
            grad,
            loss,
            correct,
        };
        self.rec(|ctx, enc| gpu::softmax_xent::encode(ctx, enc, logits, labels, &out))
    }
    fn lsq_forward(
        &mut self,
        cfg: &LsqConfig,
        v: &GpuTensor,
        group_len: usize,
        q: &QuantState<GpuTensor>,
        vhat: &GpuTensor,
    ) -> Result<()> {
        self.rec(|ctx, enc| {
            gpu::lsq::encode_forward(ctx, enc, cfg, v, group_len, &q.step, &q.beta, vhat)
        })
    }
    fn lsq_backward(
        &mut self,
        cfg: &LsqConfig,
        group_len: usize,
        q: &QuantState<GpuTensor>,
        t: &LsqBackward<'_, GpuTensor>,
    ) -> Result<()> {
        let out = LsqGrads {
            grad_vhat: t.grad_vhat,
            grad_v: t.grad_v,
            vhat: t.vhat,
            grad_step: &q.grad_step,
            grad_beta: &q.grad_beta,
        };
        self.rec(|ctx, enc| {
            gpu::lsq::encode_backward(ctx, enc, cfg, t.v, group_len, &q.step, &q.beta, &out)
        })
    }
    fn lsq_init(
        &mut self,
        cfg: &LsqConfig,
        init: StepInit,
        v: &GpuTensor,
        group_len: usize,
        q: &QuantState<GpuTensor>,
    ) -> Result<()> {
        self.rec(|ctx, enc| {
            gpu::lsq_init::encode(ctx, enc, cfg, init, v, group_len, &q.step, &q.beta)
        })
    }
    fn lsq_init_mse(
        &mut self,
        cfg: &LsqConfig,
        v: &GpuTensor,
        q: &QuantState<GpuTensor>,
    ) -> Result<()> {
        let ucfg = mse_config(cfg)?;
        let flat = v.reshape(&[v.numel()])?;
        self.rec(|ctx, enc| {
            let p = crate::quant::uniform::encode_params(ctx, enc, &flat, &ucfg)?;
            gpu::lsq_init::encode_from_affine(ctx, enc, &p.scale, &p.zero, &q.step, &q.beta)
        })
    }
    fn update(
        &mut self,
        u: &Update,
        w: &GpuTensor,
        grad: &GpuTensor,
        m: &GpuTensor,
        v: &GpuTensor,
    ) -> Result<()> {
        self.rec(|ctx, enc| gpu::optimizer::encode(ctx, enc, u, w, grad, m, v))
    }
    fn weq_act_calibrate(&mut self, bits: u32, x: &GpuTensor, record: &GpuTensor) -> Result<()> {
        let bufs = WeqActBuffers {
            range: gpu::minmax::ranges_tensor(&self.ctx, 1)?,
            hist: gpu::weq_act_histogram::hist_tensor(&self.ctx)?,
            record: record.clone(),
        };
        let flat = x.reshape(&[x.numel()])?;
        self.rec(|ctx, enc| activation::encode_calibrate(ctx, enc, &flat, bits, &bufs))
    }
    fn weq_act_forward(
        &mut self,
        bits: u32,
        record: &GpuTensor,
        x: &GpuTensor,
        y: &GpuTensor,
    ) -> Result<()> {
        self.rec(|ctx, enc| gpu::weq_act_forward::encode(ctx, enc, bits, record, x, y))
    }
    fn flush(&mut self) -> Result<()> {
        if let Some(enc) = self.encoder.take() {
            let ctx = &self.ctx;
            let index = ctx.scoped("qat step", || Ok(ctx.queue().submit([enc.finish()])))?;
            ctx.wait_for("qat step", index)?;
        }
        Ok(())
    }
}

/// Host storage of a CPU tensor.
#[derive(Debug)]
enum Buf {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// A CPU tensor: shared storage, an element offset and a shape.
#[derive(Clone, Debug)]
pub struct CpuTensor {
    buf: Rc<RefCell<Buf>>,
    offset: usize,
    shape: Vec<usize>,
}

impl CpuTensor {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn f32(&self) -> Result<Vec<f32>> {
        match &*self.buf.borrow() {
            Buf::F32(v) => Ok(v[self.offset..self.offset + self.len()].to_vec()),
            Buf::U32(_) => Err(Error::UnsupportedDType {
                op: "CpuTensor".into(),
                dtype: "u32 read as f32".into(),
            }),
        }
    }

    fn u32(&self) -> Result<Vec<u32>> {
        match &*self.buf.borrow() {
            Buf::U32(v) => Ok(v[self.offset..self.offset + self.len()].to_vec()),
            Buf::F32(_) => Err(Error::UnsupportedDType {
                op: "CpuTensor".into(),
                dtype: "f32 read as u32".into(),
            }),
        }
    }

    fn set(&self, data: &[f32]) -> Result<()> {
        match &mut *self.buf.borrow_mut() {
            Buf::F32(v) => {
                v[self.offset..self.offset + self.len()].copy_from_slice(data);
                Ok(())
            }
            Buf::U32(_) => Err(Error::UnsupportedDType {
                op: "CpuTensor".into(),
                dtype: "u32 written as f32".into(),
            }),
        }
    }

    fn set_u32(&self, data: &[u32]) -> Result<()> {
        match &mut *self.buf.borrow_mut() {
            Buf::U32(v) => {
                v[self.offset..self.offset + self.len()].copy_from_slice(data);
                Ok(())
            }
            Buf::F32(_) => Err(Error::UnsupportedDType {
                op: "CpuTensor".into(),
                dtype: "f32 written as u32".into(),
            }),
        }
    }

    fn mat(&self) -> Result<(usize, usize)> {
        match self.shape[..] {
            [r, c] => Ok((r, c)),
            _ => Err(Error::shape(
                "CpuTensor",
                format!("{:?} is not 2-D", self.shape),
            )),
        }
    }
}

/// Runs the CPU twins; results copy in and out of shared host buffers.
#[derive(Debug, Default)]
pub struct CpuEngine;

impl Engine for CpuEngine {
    type T = CpuTensor;

    fn zeros(&mut self, shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor {
            buf: Rc::new(RefCell::new(Buf::F32(vec![0.0; shape.iter().product()]))),
            offset: 0,
            shape: shape.to_vec(),
        })
    }
    fn upload(&mut self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor {
            buf: Rc::new(RefCell::new(Buf::F32(data.to_vec()))),
            offset: 0,
            shape: shape.to_vec(),
        })
    }
    fn upload_u32(&mut self, data: &[u32]) -> Result<CpuTensor> {
        Ok(CpuTensor {
            buf: Rc::new(RefCell::new(Buf::U32(data.to_vec()))),
            offset: 0,
            shape: vec![data.len()],
        })
    }
    fn write(&mut self, t: &CpuTensor, data: &[f32]) -> Result<()> {
        t.set(data)
    }
    fn read(&mut self, t: &CpuTensor) -> Result<Vec<f32>> {
        t.f32()
    }
    fn read_u32(&mut self, t: &CpuTensor) -> Result<Vec<u32>> {
        t.u32()
    }
    fn rows(&mut self, t: &CpuTensor, first: usize, count: usize) -> Result<CpuTensor> {
        let cols: usize = t.shape[1..].iter().product();
        let mut shape = t.shape.clone();
        shape[0] = count;
        Ok(CpuTensor {
            buf: t.buf.clone(),
            offset: t.offset + first * cols,
            shape,
        })
    }
    fn matmul(
        &mut self,
        a: &CpuTensor,
        ta: bool,
        b: &CpuTensor,
        tb: bool,
        bias: Option<&CpuTensor>,
        c: &CpuTensor,
        acc: bool,
    ) -> Result<()> {
        let (ar, ac) = a.mat()?;
        let (br, bc) = b.mat()?;
        let (av, bv) = (a.f32()?, b.f32()?);
        let biasv = bias.map(|t| t.f32()).transpose()?;
        let mut out = c.f32()?;
        cpu::matmul::matmul(
            Mat {
                data: &av,
                rows: ar,
                cols: ac,
                transposed: ta,
            },
            Mat {
                data: &bv,
                rows: br,
                cols: bc,
                transposed: tb,
            },
            biasv.as_deref(),
            &mut out,
            acc,
        )?;
        c.set(&out)
    }
    fn relu(&mut self, x: &CpuTensor, y: &CpuTensor) -> Result<()> {
        let mut out = vec![0.0; y.len()];
        cpu::relu::relu_forward(&x.f32()?, &mut out)?;
        y.set(&out)
    }
    fn relu_backward(&mut self, x: &CpuTensor, dy: &CpuTensor, dx: &CpuTensor) -> Result<()> {
        let mut out = vec![0.0; dx.len()];
        cpu::relu::relu_backward(&x.f32()?, &dy.f32()?, &mut out)?;
        dx.set(&out)
    }
    fn xent(
        &mut self,
        logits: &CpuTensor,
        labels: &CpuTensor,
        grad: &CpuTensor,
        loss: &CpuTensor,
        correct: &CpuTensor,
    ) -> Result<()> {
        let (_, classes) = logits.mat()?;
        let (mut g, mut l, mut c) = (
            vec![0.0; grad.len()],
            vec![0.0; loss.len()],
            vec![0u32; correct.len()],
        );
        cpu::softmax_xent::softmax_xent(
            &logits.f32()?,
            classes,
            &labels.u32()?,
            &mut g,
            &mut l,
            &mut c,
        )?;
        grad.set(&g)?;
        loss.set(&l)?;
        correct.set_u32(&c)
    }
    fn lsq_forward(
        &mut self,
        cfg: &LsqConfig,
        v: &CpuTensor,
        group_len: usize,
        q: &QuantState<CpuTensor>,
        vhat: &CpuTensor,
    ) -> Result<()> {
        let mut out = vec![0.0; vhat.len()];
        cpu::lsq::lsq_forward(
            cfg,
            &v.f32()?,
            group_len,
            &q.step.f32()?,
            &q.beta.f32()?,
            &mut out,
        )?;
        vhat.set(&out)
    }
    fn lsq_backward(
        &mut self,
        cfg: &LsqConfig,
        group_len: usize,
        q: &QuantState<CpuTensor>,
        t: &LsqBackward<'_, CpuTensor>,
    ) -> Result<()> {
        let n = t.v.len();
        let (mut dv, mut y) = (vec![0.0; n], vec![0.0; n]);
        let g = cpu::lsq::lsq_backward(
            cfg,
            &t.v.f32()?,
            &t.grad_vhat.f32()?,
            group_len,
            &q.step.f32()?,
            &q.beta.f32()?,
            &mut dv,
            &mut y,
        )?;
        t.grad_v.set(&dv)?;
        t.vhat.set(&y)?;
        q.grad_step.set(&g.step)?;
        q.grad_beta.set(&g.beta)
    }
    fn lsq_init(
        &mut self,
        cfg: &LsqConfig,
        init: StepInit,
        v: &CpuTensor,
        group_len: usize,
        q: &QuantState<CpuTensor>,
    ) -> Result<()> {
        let s = cpu::lsq_init::init_steps(cfg, init, &v.f32()?, group_len)?;
        q.beta.set(&vec![0.0; s.len()])?;
        q.step.set(&s)
    }
    fn lsq_init_mse(
        &mut self,
        cfg: &LsqConfig,
        v: &CpuTensor,
        q: &QuantState<CpuTensor>,
    ) -> Result<()> {
        let ucfg = mse_config(cfg)?;
        let data = v.f32()?;
        let ranges = crate::quant::uniform::calibrate_cpu(&data, data.len(), &ucfg)?;
        let (scale, zero) = cpu::affine_params::affine_params(&ucfg.scheme, &ranges);
        let (s, b) = cpu::lsq_init::from_affine(&scale, &zero);
        q.step.set(&s)?;
        q.beta.set(&b)
    }
    fn update(
        &mut self,
        u: &Update,
        w: &CpuTensor,
        grad: &CpuTensor,
        m: &CpuTensor,
        v: &CpuTensor,
    ) -> Result<()> {
        let (mut wv, mut mv, mut vv) = (w.f32()?, m.f32()?, v.f32()?);
        cpu::optimizer::step(u, &mut wv, &grad.f32()?, &mut mv, &mut vv)?;
        w.set(&wv)?;
        m.set(&mv)?;
        v.set(&vv)
    }
    fn weq_act_calibrate(&mut self, bits: u32, x: &CpuTensor, record: &CpuTensor) -> Result<()> {
        let c = activation::calibrate(&crate::quant::Backend::Cpu, "activations", &x.f32()?, bits)?;
        record.set_u32(bytemuck::cast_slice(&[c.record]))
    }
    fn weq_act_forward(
        &mut self,
        bits: u32,
        record: &CpuTensor,
        x: &CpuTensor,
        y: &CpuTensor,
    ) -> Result<()> {
        let words = record.u32()?;
        let r: WeqActResult = bytemuck::try_pod_read_unaligned(bytemuck::cast_slice(&words))
            .map_err(|_| Error::shape("weq_act_forward", "the record is not one WeqActResult"))?;
        let mut out = vec![0f32; y.len()];
        cpu::weq_act_forward::weq_act_forward(&x.f32()?, &mut out, bits, r.step, r.offset)?;
        y.set(&out)
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
