//! A linear layer and what can sit on it: the frozen base weight (dense or NF4), its bias,
//! and a method's adapter ([`LinearAdapter`]: LoRA and DoRA, (IA)3, implemented with their
//! methods) that wraps the base.
//!
//! The frozen weight's matmul is a custom op whose backward computes only the input
//! gradient, so a weight that does not train costs no weight-gradient matmul and keeps
//! nothing for the backward pass; an NF4 weight is dequantized on each call.

use crate::kernels::gemm::Operand;
use crate::kernels::gemv;
use crate::ops::{self, matmul_2d};
use crate::quant::Nf4Tensor;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Storage, Tensor};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A linear layer's weight: full precision, or NF4 (QLoRA's frozen base).
#[derive(Debug, Clone)]
pub enum BaseWeight {
    /// `[out, in]`, as PyTorch stores it.
    Dense(Tensor),
    Nf4(Arc<Nf4Tensor>),
}

impl BaseWeight {
    /// `(out, in)`.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self {
            BaseWeight::Dense(t) => t.dims2(),
            BaseWeight::Nf4(q) => Ok(q.dims()),
        }
    }

    pub fn elem_count(&self) -> usize {
        match self {
            BaseWeight::Dense(t) => t.elem_count(),
            BaseWeight::Nf4(q) => q.elem_count(),
        }
    }

    /// The weight as a (detached) full-precision tensor, dequantized if need be.
    pub fn dense(&self) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(t) => Ok(t.detach()),
            BaseWeight::Nf4(q) => q.dequantize(),
        }
    }

    /// Run `f` on the `f32` weight `[out, in]` as a strided view, on the CPU (an NF4 weight
    /// is dequantized for the call and dropped after it).
    pub fn with_f32<R>(&self, f: impl FnOnce(crate::kernels::gemm::Mat) -> R) -> Result<R> {
        let dense;
        let t = match self {
            BaseWeight::Dense(t) => t,
            BaseWeight::Nf4(q) => {
                dense = q.dequantize()?.to_dtype(DType::F32)?;
                &dense
            }
        };
        crate::kernels::with_f32(t, |d, l| Ok(f(crate::kernels::view(d, l)?)))
    }

    /// Run `f` on the weight `[out, in]` as a gemm operand: a strided view of an f32 weight,
    /// or an NF4 weight's codes, which the gemm dequantizes a panel at a time (no f32 copy).
    /// `None` where the weight is neither (another dtype or device).
    pub fn with_operand<R>(&self, f: impl FnOnce(Operand) -> R) -> Result<Option<R>> {
        match self {
            BaseWeight::Nf4(q) if q.device().is_cpu() => Ok(Some(q.with_mat(|m| f(m.into()))?)),
            BaseWeight::Dense(t) if t.device().is_cpu() && t.dtype() == DType::F32 => {
                crate::kernels::with_f32(t, |d, l| Ok(Some(f(crate::kernels::view(d, l)?.into()))))
            }
            _ => Ok(None),
        }
    }

    /// [`Self::with_operand`] where the caller knows the weight is f32 or NF4 on the CPU.
    pub fn with_cpu_operand<R>(&self, f: impl FnOnce(Operand) -> R) -> Result<R> {
        self.with_operand(f)?.ok_or_else(|| {
            candle_core::Error::Msg("linear: weight not f32 or NF4 on the CPU".into())
        })
    }

    /// `x Wᵀ`; while training, with the input gradient only unless `W` itself trains.
    pub fn matmul_t(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        match self {
            // the blocked kernel from a few rows up (training, a prompt's prefill); one dot
            // product per output for the few rows of a decoding step
            BaseWeight::Dense(w) if training || rows(x) > gemv::MAX_ROWS => frozen_linear(x, w),
            BaseWeight::Dense(w) => dense_product(x, w),
            BaseWeight::Nf4(_) => frozen_weight_linear(x, self),
        }
    }
}

/// `x Wᵀ` outside training for a dense `[out, in]` weight: the row-streaming kernel for the
/// few rows of a decoding step, candle's matmul otherwise.
pub fn dense_product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match gemv::linear(x, w)? {
        Some(y) => Ok(y),
        None => ops::matmul_2d(&x.contiguous()?, &w.t()?),
    }
}

/// Rows of `x` seen as a matrix `[rows, features]`.
fn rows(x: &Tensor) -> usize {
    x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1)
}

/// `x Wᵀ` for a weight that does not train.
///
/// candle's matmul backward computes the gradient of both operands, so a frozen weight
/// would cost a full extra matmul (and its memory) in every backward pass. This op's
/// backward returns only the input gradient `g W`; the forward calls the backend's matmul
/// on the storages directly, so nothing is copied. An NF4 weight is dequantized on each
/// call (forward and backward) and never kept.
struct FrozenMatmul {
    w: BaseWeight,
    /// The input's dtype, which the weight is used in (NF4 dequantizes to f32 first).
    dtype: DType,
}

/// Left and right operand layouts, the output shape and `(batch, m, n, k)` of one matmul.
type MatmulPlan = (Layout, Layout, Shape, (usize, usize, usize, usize));

/// The storage-level plan for `x Wᵀ`: a contiguous input `[.., in]` seen as one `[m, in]`
/// matrix, and a weight whose `[out, in]` layout is `w`.
fn linear_plan(x: &Layout, w: &Layout) -> Result<MatmulPlan> {
    let (out, inp) = w.shape().dims2()?;
    let dims = x.shape().dims();
    let k = *dims.last().unwrap_or(&0);
    if k != inp {
        candle_core::bail!("linear: input has {k} features, the weight {inp}");
    }
    let (start, _) = x
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("linear: input not contiguous".into()))?;
    let m = x.shape().elem_count() / k.max(1);
    let lhs = Layout::contiguous_with_offset((m, k), start);
    let rhs = w.transpose(0, 1)?;
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().unwrap_or(&mut 0) = out;
    Ok((lhs, rhs, Shape::from(out_dims), (1, m, out, k)))
}

impl FrozenMatmul {
    /// The weight as a tensor, the matmul plan for input layout `x`, and the weight's storage.
    fn run<S>(
        &self,
        x: &Layout,
        f: impl FnOnce(&Storage, MatmulPlan) -> Result<S>,
    ) -> Result<(S, Shape)> {
        let w = self.w.dense()?.to_dtype(self.dtype)?;
        let plan = linear_plan(x, w.layout())?;
        let shape = plan.2.clone();
        let (storage, _) = w.storage_and_layout();
        Ok((f(&storage, plan)?, shape))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if let CpuStorage::F32(data) = x {
            if let Some(y) = self
                .w
                .with_operand(|w| crate::kernels::matmul_rows(data, l, w.t()))?
            {
                return y;
            }
        }
        self.run(l, |w, (lhs, rhs, _, bmnk)| match w {
            Storage::Cpu(w) => x.matmul(w, bmnk, &lhs, &rhs),
            _ => candle_core::bail!("frozen linear: weight and input on different devices"),
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.run(l, |w, (lhs, rhs, _, bmnk)| match w {
            Storage::Cuda(w) => x.matmul(w, bmnk, &lhs, &rhs),
            _ => candle_core::bail!("frozen linear: weight and input on different devices"),
        })
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if grad.device().is_cpu() && grad.dtype() == DType::F32 {
            if let Some(dx) = self
                .w
                .with_operand(|w| crate::kernels::matmul_tensor(grad, w))?
            {
                return Ok(Some(dx?));
            }
        }
        let w = self.w.dense()?.to_dtype(grad.dtype())?;
        Ok(Some(matmul_2d(grad, &w)?))
    }
}

/// `x Wᵀ` with no gradient for `W` (see [`FrozenMatmul`]); a plain matmul where the
/// backend has no custom-op path (Metal) or `W` itself trains.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    frozen_weight_linear(x, &BaseWeight::Dense(w.clone()))
}

/// [`frozen_linear`] for a weight in any storage. Where the op cannot run (Metal, a dtype
/// other than the weight's, a weight that trains) an NF4 weight is dequantized into the
/// graph instead, which keeps it until the backward pass.
pub fn frozen_weight_linear(x: &Tensor, w: &BaseWeight) -> Result<Tensor> {
    let supported = matches!(x.device(), candle_core::Device::Cpu) || x.device().is_cuda();
    let direct = supported
        && match w {
            BaseWeight::Dense(t) => !t.is_variable() && t.is_contiguous() && x.dtype() == t.dtype(),
            BaseWeight::Nf4(_) => x.dtype() != DType::F64,
        };
    if !direct {
        let t = match w {
            BaseWeight::Dense(t) => t.clone(),
            BaseWeight::Nf4(q) => q.dequantize()?.to_dtype(x.dtype())?,
        };
        return matmul_2d(&x.contiguous()?, &t.t()?);
    }
    let op = FrozenMatmul {
        w: w.clone(),
        dtype: x.dtype(),
    };
    x.contiguous()?
        .apply_op1_arc(std::sync::Arc::new(Box::new(op)))
}

/// What a fine-tuning method puts on a linear layer (LoRA, DoRA, (IA)3): it wraps the
/// frozen base and decides how the base takes part in the output, the way mlx-lm's
/// `LoRALinear.from_base` wraps an `nn.Linear`. Each method's file implements it; the
/// linear layer knows no adapter kind.
pub trait LinearAdapter: std::fmt::Debug + Send + Sync {
    /// The layer's output for `x` (`base` is the frozen weight and bias).
    fn forward(&self, base: &Linear, x: &Tensor, mode: &TrainMode) -> Result<Tensor>;
    /// The dense weight `[out, in]` and bias with this adapter folded in, in `w`'s dtype
    /// (for merged exports).
    fn fold(&self, w: Tensor, bias: Option<Tensor>) -> Result<(Tensor, Option<Tensor>)>;
    /// How many parameters the adapter adds.
    fn param_count(&self) -> usize;
    /// Its forward and backward pieces for the explicit training path, or `None` where it
    /// trains through candle's autograd only.
    fn explicit(&self) -> Option<&dyn ExplicitAdapter> {
        None
    }
    /// `(A [r, in], B [out, r], scale)` where the adapter's whole weight change is
    /// `scale · B·A` (plain LoRA); `None` for every other kind (model soups average these).
    fn low_rank(&self) -> Option<(Tensor, Tensor, f64)> {
        None
    }
}

/// What an adapter keeps from its forward pass for the backward pass of the explicit
/// training path (LoRA: `x·Aᵀ` and the dropout mask's seed).
#[derive(Debug, Default)]
pub struct Saved {
    pub values: Vec<f32>,
    pub seed: Option<u64>,
}

/// Parameter gradients of the explicit path, accumulated in place by tensor id, and which
/// tensors train.
#[derive(Debug, Default)]
pub struct Grads {
    by_id: std::collections::HashMap<candle_core::TensorId, Vec<f32>>,
    trainable: std::collections::HashSet<candle_core::TensorId>,
}

impl Grads {
    /// Gradients for these trainable tensors.
    pub fn for_params<'a>(params: impl IntoIterator<Item = &'a Tensor>) -> Self {
        Self {
            by_id: Default::default(),
            trainable: params.into_iter().map(|t| t.id()).collect(),
        }
    }

    /// Whether `t` trains (its gradient is wanted).
    pub fn trains(&self, t: &Tensor) -> bool {
        self.trainable.contains(&t.id())
    }

    /// The gradient buffer of `t` (zeros the first time).
    pub fn of(&mut self, t: &Tensor) -> &mut Vec<f32> {
        self.by_id
            .entry(t.id())
            .or_insert_with(|| vec![0.0; t.elem_count()])
    }

    pub fn take(&mut self, t: &Tensor) -> Option<Vec<f32>> {
        self.by_id.remove(&t.id())
    }
}

/// An adapter's share of the explicit training path (f32 on the CPU): rows `[n, in]` in,
/// rows `[n, out]` out, the frozen base computed by the caller.
pub trait ExplicitAdapter: Send + Sync {
    /// The trainable tensors it computes gradients for.
    fn params(&self) -> Vec<Tensor>;
    /// Add the adapter's term for `x` into the base output `y` (`base`'s `x·Wᵀ + b`),
    /// drawing dropout masks from `mode` in the order the autograd path draws them.
    fn forward(
        &self,
        base: &Linear,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        mode: &TrainMode,
    ) -> Result<Saved>;
    /// For the output gradient `dy`: add the adapter's share of the input gradient into
    /// `dx` (the caller adds the base's `dy·W`) and the parameter gradients into `grads`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        base: &Linear,
        x: &[f32],
        n: usize,
        saved: &Saved,
        dy: &[f32],
        dx: &mut [f32],
        grads: &mut Grads,
    ) -> Result<()>;
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: BaseWeight,
    pub bias: Option<Tensor>,
    /// The method's adapter on this layer, if any.
    pub adapter: Option<Arc<dyn LinearAdapter>>,
}

/// Training mode and the dropout random stream, shared by every layer of one model.
///
/// The stream is a counter-based generator: its whole state is one `u64`, which checkpoints
/// store so a resumed run draws exactly the masks the uninterrupted run would have drawn.
#[derive(Debug, Default)]
pub struct TrainMode {
    training: AtomicBool,
    inference: AtomicBool,
    rng: AtomicU64,
}

impl TrainMode {
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }
    pub fn training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
    /// Whether the forward passes now are for inference only (a run's evaluation and
    /// samples): adapters then use their parameters detached, so candle keeps no graph of
    /// the whole forward pass for a backward pass that never comes.
    pub fn set_inference(&self, on: bool) {
        self.inference.store(on, Ordering::Relaxed);
    }
    pub fn inference(&self) -> bool {
        self.inference.load(Ordering::Relaxed)
    }
    pub fn rng_state(&self) -> u64 {
        self.rng.load(Ordering::Relaxed)
    }
    pub fn set_rng_state(&self, s: u64) {
        self.rng.store(s, Ordering::Relaxed);
    }

    /// An inverted-dropout mask shaped like `x`: 0 with probability `p`, else `1 / (1 - p)`.
    pub fn dropout_mask(&self, x: &Tensor, p: f32) -> Result<Tensor> {
        let mask = Self::mask_values(self.next_mask_seed(), x.elem_count(), p);
        Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())
    }

    /// Draw the seed of the next mask (the stream advances by one per mask).
    pub fn next_mask_seed(&self) -> u64 {
        self.rng.fetch_add(1, Ordering::Relaxed)
    }

    /// The `n` values of the mask drawn with `seed` ([`crate::kernels::dropout`]): the
    /// same mask every time, so the explicit path redraws it in the backward pass instead
    /// of keeping it.
    pub fn mask_values(seed: u64, n: usize, p: f32) -> Vec<f32> {
        crate::kernels::dropout::mask(seed, n, p)
    }
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight: BaseWeight::Dense(weight),
            bias,
            adapter: None,
        }
    }

    /// `x Wᵀ + b` of the frozen base alone.
    pub fn base_forward(&self, x: &Tensor, mode: &TrainMode) -> Result<Tensor> {
        let y = self.weight.matmul_t(x, mode.training())?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// The layer's output: the adapter's where there is one.
    pub fn forward_mode(&self, x: &Tensor, mode: &TrainMode) -> Result<Tensor> {
        match &self.adapter {
            Some(a) => a.forward(self, x, mode),
            None => self.base_forward(x, mode),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_mode(x, &TrainMode::default())
    }
}
