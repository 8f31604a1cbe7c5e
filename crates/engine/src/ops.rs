//! The transformer's building blocks, in two flavours.
//!
//! `Ops::Fused` uses candle's fused kernels (`rms_norm`, `rope`, `softmax_last_dim`): fast,
//! but candle 0.11 gives them no backward pass — `softmax_last_dim` even drops gradients
//! silently. `Ops::Differentiable` builds the same functions from elementary ops whose
//! backward candle implements; every one of them is checked against central finite
//! differences in the tests below, and against the fused kernels in the forward pass.

use candle_core::{DType, Result, Tensor, D};

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
        Ops::Differentiable => {
            let xf = x.to_dtype(DType::F32.max_of(dtype))?;
            let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = xf.broadcast_div(&(var + eps)?.sqrt()?)?;
            normed.to_dtype(dtype)?.broadcast_mul(w)
        }
    }
}

trait MaxOf {
    fn max_of(self, other: DType) -> DType;
}

impl MaxOf for DType {
    /// f64 stays f64 (gradient checks); everything else is normalised in f32.
    fn max_of(self, other: DType) -> DType {
        if other == DType::F64 {
            DType::F64
        } else {
            self
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

/// An additive causal mask `[q_len, kv_len]`: query `i` (at absolute position
/// `offset + i`) sees keys `0..=offset + i`.
pub fn causal_mask(
    q_len: usize,
    kv_len: usize,
    offset: usize,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|i| {
            (0..kv_len).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (q_len, kv_len), device)?.to_dtype(dtype)
}

/// Scaled dot-product attention with a causal mask. `q`: `[b, h, t, d]`; `k`, `v`:
/// `[b, h, T, d]` (already repeated for grouped-query attention).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize, ops: Ops) -> Result<Tensor> {
    let (_, _, t, d) = q.dims4()?;
    let kv_len = k.dim(2)?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = if t > 1 || offset + t < kv_len {
        scores.broadcast_add(&causal_mask(t, kv_len, offset, scores.dtype(), q.device())?)?
    } else {
        scores
    };
    softmax_last_dim(&scores, ops)?.matmul(v)
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

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
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
    }

    #[test]
    fn attention_gradient_through_q_k_v() {
        let (q, k, v) = (
            rand_t(&[1, 2, 3, 4], 20),
            rand_t(&[1, 2, 3, 4], 21),
            rand_t(&[1, 2, 3, 4], 22),
        );
        check_grad(&[1, 2, 3, 4], 23, |x| {
            attention(x, &k, &v, 0, Ops::Differentiable)
        });
        check_grad(&[1, 2, 3, 4], 24, |x| {
            attention(&q, x, &v, 0, Ops::Differentiable)
        });
        check_grad(&[1, 2, 3, 4], 25, |x| {
            attention(&q, &k, x, 0, Ops::Differentiable)
        });
        // grouped-query: gradients of the shared kv heads sum over their query heads
        let q4 = rand_t(&[1, 4, 3, 4], 26);
        check_grad(&[1, 2, 3, 4], 27, |x| {
            attention(
                &q4,
                &repeat_kv(x, 2)?,
                &repeat_kv(&v, 2)?,
                0,
                Ops::Differentiable,
            )
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
    fn causal_mask_respects_the_offset() {
        let m = causal_mask(2, 4, 2, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0][..3], [0.0, 0.0, 0.0]);
        assert!(m[0][3].is_infinite());
        assert_eq!(m[1], [0.0; 4]);
    }
}
