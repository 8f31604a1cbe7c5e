//! The transformer's building blocks, in two flavours.
//!
//! `Ops::Fused` uses candle's fused kernels (`rms_norm`, `rope`, `softmax_last_dim`): fast,
//! but candle 0.11 gives them no backward pass — `softmax_last_dim` even drops gradients
//! silently. `Ops::Differentiable` builds the same functions from elementary ops whose
//! backward candle implements; every one of them is checked against central finite
//! differences in the tests below, and against the fused kernels in the forward pass.

use crate::dtype::wide_dtype;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor, D};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ops {
    /// Inference: fused kernels, no gradients.
    Fused,
    /// Training: composites with a correct backward.
    Differentiable,
}

/// `x / sqrt(mean(x^2) + eps) * w` over the last dimension (HF `LlamaRMSNorm`, computed in f32).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, ops: Ops) -> Result<Tensor> {
    let dtype = x.dtype();
    match ops {
        Ops::Fused => candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32),
        Ops::Differentiable if fused_training(x) && !w.is_variable() => {
            // dx = r·(g∘w) − x·r³·mean(g∘w∘x), r = 1/sqrt(mean(x²) + eps)
            let out = candle_nn::ops::rms_norm(&x.detach().contiguous()?, w, eps as f32)?;
            let (xs, ws) = (x.detach(), w.detach());
            with_backward(
                x,
                out,
                Box::new(move |_, g| {
                    let xf = xs.to_dtype(DType::F32)?;
                    let gw = g
                        .to_dtype(DType::F32)?
                        .broadcast_mul(&ws.to_dtype(DType::F32)?)?;
                    let r = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?
                        .sqrt()?
                        .recip()?;
                    let m = (&gw * &xf)?.mean_keepdim(D::Minus1)?;
                    let dx = (gw.broadcast_mul(&r)? - xf.broadcast_mul(&(r.powf(3.0)? * m)?)?)?;
                    dx.to_dtype(dtype)
                }),
            )
        }
        Ops::Differentiable => {
            let xf = x.to_dtype(wide_dtype(dtype))?;
            let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = xf.broadcast_div(&(var + eps)?.sqrt()?)?;
            normed.to_dtype(dtype)?.broadcast_mul(w)
        }
    }
}

/// Softmax over the last dimension. The max is subtracted for stability; it is detached,
/// which is exact because softmax is invariant to a constant shift.
pub fn softmax_last_dim(x: &Tensor, ops: Ops) -> Result<Tensor> {
    match ops {
        Ops::Fused => candle_nn::ops::softmax_last_dim(&x.contiguous()?),
        Ops::Differentiable => {
            let m = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&m)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// `log_softmax` over the last dimension (differentiable, shift-stable).
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Rotary position embedding in the HF ("rotate half") layout.
/// `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[seq, head_dim / 2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, ops: Ops) -> Result<Tensor> {
    match ops {
        Ops::Fused => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
        Ops::Differentiable if fused_training(x) => {
            // rope is a rotation by θ; its transpose (the backward) is the rotation by −θ
            let out = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, cos, sin)?;
            let (cos, neg_sin) = (cos.detach(), sin.detach().neg()?);
            with_backward(
                x,
                out,
                Box::new(move |_, g| candle_nn::rotary_emb::rope(&g.contiguous()?, &cos, &neg_sin)),
            )
        }
        Ops::Differentiable => {
            let d = x.dim(D::Minus1)?;
            let half = d / 2;
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
            let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
        }
    }
}

/// `silu(gate) * up`, the SwiGLU activation of the Llama MLP.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// GeGLU with the tanh approximation of GELU (`gelu_pytorch_tanh`): `gelu(gate) · up`.
pub fn geglu_tanh(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.gelu()? * up
}

/// Soft-capping `c·tanh(x/c)`.
pub fn softcap(x: &Tensor, c: f64) -> Result<Tensor> {
    (x / c)?.tanh()? * c
}

/// A fused kernel's output with a hand-written backward.
///
/// candle's fused kernels (`rms_norm`, `rope`, `softmax_last_dim`) are fast and work on every
/// backend but have no backward. This op takes their output (computed on detached inputs,
/// so no graph is kept) as its forward result and supplies the gradient itself, so training
/// gets the fused speed and memory with a correct backward on any device.
type Backward = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

struct FusedWithBackward {
    out: Tensor,
    /// `(output, grad of output) -> grad of input`
    bwd: Backward,
}

impl FusedWithBackward {
    fn check(&self) -> Result<()> {
        if self.out.layout().contiguous_offsets() != Some((0, self.out.elem_count())) {
            candle_core::bail!("fused op output must be a fresh contiguous tensor");
        }
        Ok(())
    }
}

impl CustomOp1 for FusedWithBackward {
    fn name(&self) -> &'static str {
        "fused-with-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.check()?;
        match &*self.out.storage_and_layout().0 {
            Storage::Cpu(c) => Ok((c.clone(), self.out.shape().clone())),
            _ => candle_core::bail!("fused op: output on another device"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.check()?;
        let (st, l) = self.out.storage_and_layout();
        match &*st {
            Storage::Cuda(c) => Ok((c.try_clone(l)?, self.out.shape().clone())),
            _ => candle_core::bail!("fused op: output on another device"),
        }
    }

    #[cfg(feature = "metal")]
    fn metal_fwd(
        &self,
        _: &candle_core::MetalStorage,
        _: &Layout,
    ) -> Result<(candle_core::MetalStorage, Shape)> {
        self.check()?;
        let (st, l) = self.out.storage_and_layout();
        match &*st {
            Storage::Metal(c) => Ok((c.try_clone(l)?, self.out.shape().clone())),
            _ => candle_core::bail!("fused op: output on another device"),
        }
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.bwd)(res, grad)?))
    }
}

fn with_backward(x: &Tensor, out: Tensor, bwd: Backward) -> Result<Tensor> {
    let out = out.contiguous()?;
    x.apply_op1_arc(std::sync::Arc::new(Box::new(FusedWithBackward {
        out,
        bwd,
    })))
}

/// Whether the fused-with-backward path applies (the composites stay the f64 reference).
fn fused_training(x: &Tensor) -> bool {
    x.dtype() != DType::F64
}

/// `x · m` for `x` of any rank and a matrix `m`, as one 2-D matmul over all leading
/// dimensions (a batched matmul with a broadcast right side runs one small gemm per batch).
pub fn matmul_2d(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() <= 2 {
        return x.matmul(m);
    }
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k.max(1);
    let y = x.reshape((rows, k))?.matmul(m)?;
    let mut out = dims.to_vec();
    *out.last_mut().unwrap_or(&mut 0) = m.dim(1)?;
    y.reshape(out)
}

/// Per-row next-token NLL `logsumexp(x) - x[target]` over `[n, vocab]` logits, fused: the
/// forward keeps no intermediates and the backward writes `softmax(x) - onehot` in one
/// pass, where the composite (`log_softmax` + `gather`) materialises four vocab-wide copies.
struct CrossEntropy {
    targets: std::sync::Arc<Vec<u32>>,
}

fn row_stats(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
    (max, sum)
}

fn f32_rows<'a>(s: &'a CpuStorage, l: &Layout) -> Result<(&'a [f32], usize, usize)> {
    let (n, v) = l.shape().dims2()?;
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("cross entropy: logits not contiguous".into()))?;
    match s {
        CpuStorage::F32(d) => Ok((&d[start..end], n, v)),
        _ => candle_core::bail!("cross entropy: fused path is f32 only"),
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, n, v) = f32_rows(s, l)?;
        let out: Vec<f32> = (0..n)
            .map(|i| {
                let row = &x[i * v..(i + 1) * v];
                let (max, sum) = row_stats(row);
                max + sum.ln() - row[self.targets[i] as usize]
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, x: &Tensor, _nll: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let op = CrossEntropyGrad {
            targets: self.targets.clone(),
            grad: g,
        };
        Ok(Some(x.apply_op1_no_bwd(&op)?))
    }
}

struct CrossEntropyGrad {
    targets: std::sync::Arc<Vec<u32>>,
    grad: Vec<f32>,
}

impl CustomOp1 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, n, v) = f32_rows(s, l)?;
        let mut out = vec![0f32; n * v];
        for i in 0..n {
            let row = &x[i * v..(i + 1) * v];
            let (max, sum) = row_stats(row);
            let k = self.grad[i] / sum;
            let o = &mut out[i * v..(i + 1) * v];
            for (o, &r) in o.iter_mut().zip(row) {
                *o = (r - max).exp() * k;
            }
            o[self.targets[i] as usize] -= self.grad[i];
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Per-row NLL of `targets` under `logits` `[n, vocab]`, as a `[n]` tensor: the fused op on
/// CPU in f32, the differentiable composite elsewhere.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if matches!(logits.device(), candle_core::Device::Cpu) && logits.dtype() == DType::F32 {
        let t = targets.to_vec1::<u32>()?;
        return logits
            .contiguous()?
            .apply_op1_arc(std::sync::Arc::new(Box::new(CrossEntropy {
                targets: std::sync::Arc::new(t),
            })));
    }
    log_softmax_last_dim(logits)?
        .gather(&targets.unsqueeze(1)?, D::Minus1)?
        .squeeze(1)?
        .neg()
}

/// An additive causal mask `[q_len, kv_len]`: query `i` (at absolute position
/// `offset + i`) sees keys `0..=offset + i`, or with a `window` only the last `window` of
/// them (transformers' sliding window: key `j` is seen when `j > offset + i - window`).
pub fn causal_mask(
    q_len: usize,
    kv_len: usize,
    offset: usize,
    window: Option<usize>,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|i| {
            (0..kv_len).map(move |j| {
                let q = offset + i;
                if j > q || window.is_some_and(|w| j + w <= q) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (q_len, kv_len), device)?.to_dtype(dtype)
}

/// The L2 norm of each row of `w` (`[out]` from `[out, in]`), summed in the wide dtype and
/// returned in `w`'s.
pub fn row_norms(w: &Tensor) -> Result<Tensor> {
    w.to_dtype(wide_dtype(w.dtype()))?
        .sqr()?
        .sum(1)?
        .sqrt()?
        .to_dtype(w.dtype())
}

/// Scaled dot-product attention with a causal mask. `q`: `[b, h, t, d]`; `k`, `v`:
/// `[b, h, T, d]` (already repeated for grouped-query attention).
/// How one layer turns query-key products into attention scores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    /// Sliding window: each query sees only the last `window` keys up to itself.
    pub window: Option<usize>,
    /// The factor on `q·k`; `None` for `1/√head_dim`.
    pub scale: Option<f64>,
    /// Soft-capping `c·tanh(s/c)` of the scaled scores, before the mask (Gemma 2).
    pub softcap: Option<f64>,
}

/// Causal attention of `q` (at positions `offset..`) over `k`/`v` (positions `0..`), scored
/// as `how` says.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    offset: usize,
    how: Scores,
    ops: Ops,
) -> Result<Tensor> {
    let (_, _, t, d) = q.dims4()?;
    let kv_len = k.dim(2)?;
    let scale = how.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let window = how.window;
    let scores = q.matmul(&k.t()?)?;
    let dtype = scores.dtype();
    // bf16 / f16 scores are normalised in f32 (as PyTorch's attention kernels do): their
    // row sums over hundreds of keys would lose the small probabilities
    let wide = wide_dtype(dtype);
    // scaled, masked scores in the wide dtype
    let masked = |x: Tensor| -> Result<Tensor> {
        let x = (x.to_dtype(wide)? * scale)?;
        let x = match how.softcap {
            Some(c) => ((x / c)?.tanh()? * c)?,
            None => x,
        };
        if t > 1 || offset + t < kv_len || window.is_some_and(|w| kv_len > w) {
            x.broadcast_add(&causal_mask(t, kv_len, offset, window, wide, q.device())?)
        } else {
            Ok(x)
        }
    };
    if ops == Ops::Differentiable && fused_training(&scores) && how.softcap.is_none() {
        // softmax(s·x + mask): fused forward; backward s·p∘(g − Σ g∘p)
        let m = masked(scores.detach())?;
        let p = candle_nn::ops::softmax_last_dim(&m.contiguous()?)?.to_dtype(dtype)?;
        drop(m);
        let p = with_backward(
            &scores,
            p,
            Box::new(move |p, g| {
                let (p, g) = (p.to_dtype(wide)?, g.to_dtype(wide)?);
                let gp = (g * &p)?;
                let sum = gp.sum_keepdim(D::Minus1)?;
                ((gp - p.broadcast_mul(&sum)?)? * scale)?.to_dtype(dtype)
            }),
        )?;
        return p.matmul(v);
    }
    softmax_last_dim(&masked(scores)?, ops)?
        .to_dtype(dtype)?
        .matmul(v)
}

/// Repeat each key/value head `n_rep` times: `[b, kv_heads, T, d]` → `[b, kv_heads * n_rep, T, d]`.
pub fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kvh, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kvh, n_rep, t, d))?
        .reshape((b, kvh * n_rep, t, d))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::linear::frozen_linear;
    use candle_core::{Device, Var};

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    pub fn rand_t(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(rand_vec(n, seed), shape, &Device::Cpu).unwrap()
    }

    /// Compare the analytic gradient of `sum(f(x) * r)` with central differences, in f64.
    pub fn check_grad(shape: &[usize], seed: u64, f: impl Fn(&Tensor) -> Result<Tensor>) {
        let x = Var::from_tensor(&rand_t(shape, seed)).unwrap();
        let out = f(x.as_tensor()).unwrap();
        let r = rand_t(out.dims(), seed + 1);
        let loss = (out * &r).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(x.as_tensor())
            .expect("no gradient reached the input")
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let x0 = x
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let h = 1e-6;
        let eval = |xs: &[f64]| -> f64 {
            let t = Tensor::from_vec(xs.to_vec(), shape, &Device::Cpu).unwrap();
            (f(&t).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let mut worst = 0f64;
        for i in 0..x0.len() {
            let mut p = x0.clone();
            p[i] += h;
            let mut m = x0.clone();
            m[i] -= h;
            let fd = (eval(&p) - eval(&m)) / (2.0 * h);
            let err = (fd - g[i]).abs() / (1.0 + fd.abs());
            worst = worst.max(err);
        }
        assert!(
            worst < 1e-6,
            "finite-difference mismatch: worst relative error {worst:e}"
        );
    }

    /// The largest element of an f32 tensor.
    fn max_f32(t: &Tensor) -> f32 {
        t.flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        max_f32(&(a - b).unwrap().abs().unwrap())
    }

    /// Whether two f32 evaluations `y1`, `y2` of the product `a @ b` agree as closely as f32
    /// arithmetic guarantees, whatever the summation order (blocked, SIMD width, FMA or not):
    /// each is within γ_k·(|a| @ |b|) of the exact product (Higham, Accuracy and Stability of
    /// Numerical Algorithms, §3.1; γ_k = k·u / (1 − k·u), u = 2⁻²⁴, k the inner dimension), so
    /// they are within twice that of each other. A bound from the arithmetic, not one CPU.
    pub fn assert_same_f32_product(y1: &Tensor, y2: &Tensor, a: &Tensor, b: &Tensor) {
        let k = a.dim(D::Minus1).unwrap() as f64;
        let u = (2f64).powi(-24);
        let gamma = k * u / (1.0 - k * u);
        let scale = a
            .abs()
            .unwrap()
            .broadcast_matmul(&b.abs().unwrap())
            .unwrap();
        let bound = (scale * (2.0 * gamma)).unwrap();
        let excess = max_f32(&((y1 - y2).unwrap().abs().unwrap() - bound).unwrap());
        assert!(
            excess <= 0.0,
            "the products differ by {excess:e} more than f32 allows"
        );
    }

    #[test]
    fn rms_norm_gradient() {
        let w = rand_t(&[6], 7);
        check_grad(&[2, 3, 6], 1, |x| {
            rms_norm(x, &w, 1e-5, Ops::Differentiable)
        });
        // and the weight's gradient
        let x = rand_t(&[2, 3, 6], 2);
        check_grad(&[6], 3, |w| rms_norm(&x, w, 1e-5, Ops::Differentiable));
    }

    #[test]
    fn softmax_gradient() {
        check_grad(&[3, 5], 4, |x| {
            softmax_last_dim(&(x * 3.0)?, Ops::Differentiable)
        });
    }

    #[test]
    fn log_softmax_gradient() {
        check_grad(&[3, 7], 5, |x| log_softmax_last_dim(&(x * 4.0)?));
    }

    #[test]
    fn rope_gradient() {
        let cos = rand_t(&[4, 3], 8);
        let sin = rand_t(&[4, 3], 9);
        check_grad(&[1, 2, 4, 6], 6, |x| {
            rope(x, &cos, &sin, Ops::Differentiable)
        });
    }

    #[test]
    fn swiglu_gradient() {
        let up = rand_t(&[4, 5], 10);
        check_grad(&[4, 5], 11, |g| swiglu(&(g * 3.0)?, &up));
        let gate = rand_t(&[4, 5], 12);
        check_grad(&[4, 5], 13, |u| swiglu(&gate, u));
        check_grad(&[4, 5], 14, |g| geglu_tanh(&(g * 3.0)?, &up));
        check_grad(&[4, 5], 15, |x| softcap(&(x * 4.0)?, 2.5));
    }

    #[test]
    fn attention_gradient_through_q_k_v() {
        let (q, k, v) = (
            rand_t(&[1, 2, 3, 4], 20),
            rand_t(&[1, 2, 3, 4], 21),
            rand_t(&[1, 2, 3, 4], 22),
        );
        check_grad(&[1, 2, 3, 4], 23, |x| {
            attention(x, &k, &v, 0, Scores::default(), Ops::Differentiable)
        });
        check_grad(&[1, 2, 3, 4], 24, |x| {
            attention(&q, x, &v, 0, Scores::default(), Ops::Differentiable)
        });
        check_grad(&[1, 2, 3, 4], 25, |x| {
            attention(&q, &k, x, 0, Scores::default(), Ops::Differentiable)
        });
        // grouped-query: gradients of the shared kv heads sum over their query heads
        let q4 = rand_t(&[1, 4, 3, 4], 26);
        check_grad(&[1, 2, 3, 4], 27, |x| {
            attention(
                &q4,
                &repeat_kv(x, 2)?,
                &repeat_kv(&v, 2)?,
                0,
                Scores::default(),
                Ops::Differentiable,
            )
        });
        // a sliding window of 2 keys: the masked keys get no gradient, the rest do
        let slide = Scores {
            window: Some(2),
            ..Scores::default()
        };
        check_grad(&[1, 2, 3, 4], 28, |x| {
            attention(&q, x, &v, 0, slide, Ops::Differentiable)
        });
        // Gemma 2: a scale of its own and soft-capped scores
        let capped = Scores {
            window: None,
            scale: Some(0.7),
            softcap: Some(1.5),
        };
        check_grad(&[1, 2, 3, 4], 29, |x| {
            attention(x, &k, &v, 0, capped, Ops::Differentiable)
        });
    }

    #[test]
    fn composites_match_fused_kernels() {
        let f = |t: Tensor| t.to_dtype(DType::F32).unwrap();
        let x = f(rand_t(&[2, 3, 4, 8], 30));
        let w = f(rand_t(&[8], 31));
        let a = rms_norm(&x, &w, 1e-6, Ops::Fused).unwrap();
        let b = rms_norm(&x, &w, 1e-6, Ops::Differentiable).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
        let a = softmax_last_dim(&x, Ops::Fused).unwrap();
        let b = softmax_last_dim(&x, Ops::Differentiable).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
        let cos = f(rand_t(&[4, 4], 32));
        let sin = f(rand_t(&[4, 4], 33));
        let a = rope(&x, &cos, &sin, Ops::Fused).unwrap();
        let b = rope(&x, &cos, &sin, Ops::Differentiable).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
    }

    #[test]
    fn frozen_linear_matches_matmul_and_gives_only_the_input_gradient() {
        let w = rand_t(&[5, 4], 40);
        let x = rand_t(&[2, 3, 4], 41);
        let a = frozen_linear(&x, &w).unwrap();
        let b = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        assert!(
            max_diff(
                &a.to_dtype(DType::F32).unwrap(),
                &b.to_dtype(DType::F32).unwrap()
            ) < 1e-12
        );
        check_grad(&[2, 3, 4], 42, |x| frozen_linear(x, &w));
        // a strided (transposed) input is made contiguous first
        let xt = rand_t(&[4, 3], 43).t().unwrap();
        let a = frozen_linear(&xt, &w).unwrap();
        let b = xt.matmul(&w.t().unwrap()).unwrap();
        assert!(
            max_diff(
                &a.to_dtype(DType::F32).unwrap(),
                &b.to_dtype(DType::F32).unwrap()
            ) < 1e-12
        );
        // W is not a Var and must get no gradient even when it is reachable
        let xv = Var::from_tensor(&x).unwrap();
        let g = frozen_linear(xv.as_tensor(), &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&w).is_none());
    }

    #[test]
    fn fused_cross_entropy_matches_the_composite_and_its_gradient() {
        let x = (rand_t(&[5, 11], 50) * 4.0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let targets = Tensor::new(&[0u32, 3, 10, 7, 7], &Device::Cpu).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let r = rand_t(&[5], 51).to_dtype(DType::F32).unwrap();
        let fused = cross_entropy_rows(xv.as_tensor(), &targets).unwrap();
        let composite = log_softmax_last_dim(xv.as_tensor())
            .unwrap()
            .gather(&targets.unsqueeze(1).unwrap(), D::Minus1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        assert!(max_diff(&fused, &composite) < 1e-5);
        let g1 = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (composite * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            g1.get(xv.as_tensor()).unwrap(),
            g2.get(xv.as_tensor()).unwrap(),
        );
        assert!(max_diff(a, b) < 1e-6, "{}", max_diff(a, b));
    }

    /// The gradient of `sum(f(x) * r)` with respect to `x`.
    fn grad_of(x: &Tensor, r: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Tensor {
        let v = Var::from_tensor(x).unwrap();
        let g = (f(v.as_tensor()).unwrap() * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        g.get(v.as_tensor()).expect("no gradient").clone()
    }

    #[test]
    fn fused_training_ops_match_the_checked_composites_in_value_and_gradient() {
        let f32t = |shape: &[usize], seed| rand_t(shape, seed).to_dtype(DType::F32).unwrap();
        let x = f32t(&[2, 3, 4, 8], 60);
        let r = f32t(&[2, 3, 4, 8], 61);
        // rms_norm: the f64 composite is the finite-difference-checked reference
        let w = f32t(&[8], 62);
        let fused = |x: &Tensor| rms_norm(x, &w, 1e-5, Ops::Differentiable);
        let reference = |x: &Tensor| {
            rms_norm(
                &x.to_dtype(DType::F64)?,
                &w.to_dtype(DType::F64)?,
                1e-5,
                Ops::Differentiable,
            )?
            .to_dtype(DType::F32)
        };
        assert!(max_diff(&fused(&x).unwrap(), &reference(&x).unwrap()) < 1e-5);
        assert!(max_diff(&grad_of(&x, &r, fused), &grad_of(&x, &r, reference)) < 1e-4);
        // rope
        let (cos, sin) = (f32t(&[4, 4], 63), f32t(&[4, 4], 64));
        let fused = |x: &Tensor| rope(x, &cos, &sin, Ops::Differentiable);
        let reference = |x: &Tensor| {
            rope(
                &x.to_dtype(DType::F64)?,
                &cos.to_dtype(DType::F64)?,
                &sin.to_dtype(DType::F64)?,
                Ops::Differentiable,
            )?
            .to_dtype(DType::F32)
        };
        assert!(max_diff(&fused(&x).unwrap(), &reference(&x).unwrap()) < 1e-5);
        assert!(max_diff(&grad_of(&x, &r, fused), &grad_of(&x, &r, reference)) < 1e-5);
        // attention with the fused causal softmax, through q, k and v
        let (q, k, v) = (
            f32t(&[1, 2, 5, 4], 65),
            f32t(&[1, 2, 5, 4], 66),
            f32t(&[1, 2, 5, 4], 67),
        );
        let r = f32t(&[1, 2, 5, 4], 68);
        let d = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        for which in 0..3 {
            let pick = |x: &Tensor, f64s: bool| -> Result<Tensor> {
                let conv = |t: &Tensor| {
                    if f64s {
                        t.to_dtype(DType::F64)
                    } else {
                        Ok(t.clone())
                    }
                };
                let (q, k, v) = match which {
                    0 => (conv(x)?, conv(&k)?, conv(&v)?),
                    1 => (conv(&q)?, conv(x)?, conv(&v)?),
                    _ => (conv(&q)?, conv(&k)?, conv(x)?),
                };
                attention(&q, &k, &v, 0, Scores::default(), Ops::Differentiable)?
                    .to_dtype(DType::F32)
            };
            let x = [&q, &k, &v][which];
            let a = grad_of(x, &r, |x| pick(x, false));
            let b = grad_of(&d(x).to_dtype(DType::F32).unwrap(), &r, |x| pick(x, true));
            assert!(
                max_diff(&a, &b) < 1e-5,
                "attention gradient {which}: {}",
                max_diff(&a, &b)
            );
        }
    }

    #[test]
    fn causal_mask_respects_the_offset() {
        let m = causal_mask(2, 4, 2, None, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0][..3], [0.0, 0.0, 0.0]);
        assert!(m[0][3].is_infinite());
        assert_eq!(m[1], [0.0; 4]);
        // window 2: query at position 3 sees keys 2 and 3 only
        let w = causal_mask(2, 4, 2, Some(2), DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let seen = |row: &[f32]| row.iter().map(|x| x.is_finite()).collect::<Vec<_>>();
        assert_eq!(seen(&w[0]), [false, true, true, false]);
        assert_eq!(seen(&w[1]), [false, false, true, true]);
    }
}
