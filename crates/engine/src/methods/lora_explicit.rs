//! LoRA and DoRA on the explicit training path: their forward and backward pieces over
//! `[rows, features]` slices, the math of [`LoraWeights::forward`] written out.
//!
//! LoRA: `y += s·(x̃·Aᵀ)·Bᵀ` with `x̃` the dropped-out input. `low = x̃·Aᵀ` is kept; the
//! backward pass gives `dB = s·dyᵀ·low`, `dlow = s·dy·B`, `dA = dlowᵀ·x̃` and
//! `dx += (dlow·A) ∘ mask`, redrawing the mask from its seed.
//!
//! DoRA, as PEFT computes it (the weight norm detached): with `g = m / ‖W + s·B·A‖` per
//! output row, `up = s·low·Bᵀ` and `plain = x̃·Wᵀ`,
//! `y += plain ∘ (g − 1) + up ∘ g`. Backward: `up` takes `dy ∘ g` (then as LoRA), `plain`
//! takes `dy ∘ (g − 1)` through `W` (into `x̃`), and `dm = Σ_rows dy ∘ (plain + up) / ‖…‖`.

use super::lora::LoraWeights;
use crate::kernels::dropout;
use crate::kernels::gemm::{self, Mat};
use crate::linear::{ExplicitAdapter, Grads, Linear, Saved, TrainMode};
use candle_core::{Result, Tensor};
use std::borrow::Cow;

/// A small tensor's values as f32 (A, B, m: a copy costs nothing next to the gemms).
fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()
}

impl LoraWeights {
    /// `x` with this layer's dropout mask applied (`seed`), or `x` itself.
    fn dropped<'a>(&self, x: &'a [f32], seed: Option<u64>) -> Cow<'a, [f32]> {
        match seed {
            None => Cow::Borrowed(x),
            Some(s) => {
                let mut out = vec![0f32; x.len()];
                dropout::apply(s, self.dropout, x, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// DoRA's `(g, ‖W + s·B·A‖)` per output row, from the current A, B and m.
    fn dora_factor(&self, base: &Linear, a: &[f32], b: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let (r, inp) = self.a.dims2()?;
        let out = self.b.dim(0)?;
        let m = f32_values(self.magnitude.as_ref().expect("DoRA has a magnitude"))?;
        let mut ba = vec![0f32; out * inp];
        gemm::matmul(
            &mut ba,
            inp,
            Mat::new(b, out, r),
            Mat::new(a, r, inp),
            false,
        );
        let s = self.scale as f32;
        let norms = base.weight.with_f32(|w| {
            (0..out)
                .map(|o| {
                    (0..inp)
                        .map(|k| {
                            let v = w.data[o * w.rs + k * w.cs] + s * ba[o * inp + k];
                            v * v
                        })
                        .sum::<f32>()
                        .sqrt()
                })
                .collect::<Vec<f32>>()
        })?;
        let g = m.iter().zip(&norms).map(|(m, n)| m / n).collect();
        Ok((g, norms))
    }

    /// `x̃·Wᵀ` without the bias, `[n, out]`.
    fn plain(&self, base: &Linear, xd: &[f32], n: usize) -> Result<Vec<f32>> {
        let (out, inp) = base.weight.dims2()?;
        let mut p = vec![0f32; n * out];
        base.weight
            .with_cpu_operand(|w| gemm::matmul(&mut p, out, Mat::new(xd, n, inp), w.t(), false))?;
        Ok(p)
    }
}

impl ExplicitAdapter for LoraWeights {
    fn params(&self) -> Vec<Tensor> {
        let mut p = vec![self.a.clone(), self.b.clone()];
        p.extend(self.magnitude.iter().cloned());
        p
    }

    fn forward(
        &self,
        base: &Linear,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        mode: &TrainMode,
    ) -> Result<Saved> {
        let (r, inp) = self.a.dims2()?;
        let out = self.b.dim(0)?;
        let seed = (mode.training() && self.dropout > 0.0).then(|| mode.next_mask_seed());
        let xd = self.dropped(x, seed);
        let (a, b) = (f32_values(&self.a)?, f32_values(&self.b)?);
        let mut low = vec![0f32; n * r];
        let (ma, mb) = (Mat::new(&a, r, inp), Mat::new(&b, out, r));
        gemm::matmul(&mut low, r, Mat::new(&xd, n, inp), ma.t(), false);
        let scaled: Vec<f32> = low.iter().map(|v| v * self.scale as f32).collect();
        if self.magnitude.is_none() {
            gemm::matmul(y, out, Mat::new(&scaled, n, r), mb.t(), true);
            return Ok(Saved { values: low, seed });
        }
        let (g, _) = self.dora_factor(base, &a, &b)?;
        let mut up = vec![0f32; n * out];
        gemm::matmul(&mut up, out, Mat::new(&scaled, n, r), mb.t(), false);
        // x̃·Wᵀ: y less its bias without dropout, one more product with it
        let plain = match seed {
            Some(_) => self.plain(base, &xd, n)?,
            None => {
                let bias = base.bias.as_ref().map(f32_values).transpose()?;
                let mut p = y.to_vec();
                if let Some(bias) = bias {
                    for row in p.chunks_mut(out) {
                        row.iter_mut().zip(&bias).for_each(|(v, b)| *v -= b);
                    }
                }
                p
            }
        };
        for ((yr, pr), ur) in y.chunks_mut(out).zip(plain.chunks(out)).zip(up.chunks(out)) {
            for o in 0..out {
                yr[o] += pr[o] * (g[o] - 1.0) + ur[o] * g[o];
            }
        }
        Ok(Saved { values: low, seed })
    }

    fn backward(
        &self,
        base: &Linear,
        x: &[f32],
        n: usize,
        saved: &Saved,
        dy: &[f32],
        dx: &mut [f32],
        grads: &mut Grads,
    ) -> Result<()> {
        let (r, inp) = self.a.dims2()?;
        let out = self.b.dim(0)?;
        let s = self.scale as f32;
        let (a, b) = (f32_values(&self.a)?, f32_values(&self.b)?);
        let (ma, mb) = (Mat::new(&a, r, inp), Mat::new(&b, out, r));
        let xd = self.dropped(x, saved.seed);
        let scaled: Vec<f32> = saved.values.iter().map(|v| v * s).collect();
        let low = Mat::new(&scaled, n, r);
        // the gradient reaching the low-rank product, and x̃'s gradient from DoRA's plain term
        let mut dxd = None;
        let dup: Cow<[f32]> = match &self.magnitude {
            None => Cow::Borrowed(dy),
            Some(m) => {
                let (g, norms) = self.dora_factor(base, &a, &b)?;
                let mut up = vec![0f32; n * out];
                gemm::matmul(&mut up, out, low, mb.t(), false);
                let plain = self.plain(base, &xd, n)?;
                let dm = grads.of(m);
                let mut dup = vec![0f32; n * out];
                let mut dplain = vec![0f32; n * out];
                for i in 0..n {
                    for o in 0..out {
                        let (d, k) = (dy[i * out + o], i * out + o);
                        dm[o] += d * (plain[k] + up[k]) / norms[o];
                        dup[k] = d * g[o];
                        dplain[k] = d * (g[o] - 1.0);
                    }
                }
                let mut t = vec![0f32; n * inp];
                base.weight.with_cpu_operand(|w| {
                    gemm::matmul(&mut t, inp, Mat::new(&dplain, n, out), w, false)
                })?;
                dxd = Some(t);
                Cow::Owned(dup)
            }
        };
        let dup = Mat::new(&dup, n, out);
        // dB += s·dupᵀ·low
        gemm::matmul(grads.of(&self.b), r, dup.t(), low, true);
        // dlow = s·dup·B
        let mut dlow = vec![0f32; n * r];
        gemm::matmul(&mut dlow, r, dup, mb, false);
        dlow.iter_mut().for_each(|v| *v *= s);
        let dlow = Mat::new(&dlow, n, r);
        // dA += dlowᵀ·x̃
        gemm::matmul(
            grads.of(&self.a),
            inp,
            dlow.t(),
            Mat::new(&xd, n, inp),
            true,
        );
        // x̃'s gradient dlow·A (+ DoRA's plain term), then through the mask into dx
        match (saved.seed, dxd) {
            (None, None) => gemm::matmul(dx, inp, dlow, ma, true),
            (seed, t) => {
                let mut t = t.unwrap_or_else(|| vec![0f32; n * inp]);
                gemm::matmul(&mut t, inp, dlow, ma, true);
                match seed {
                    None => dx.iter_mut().zip(&t).for_each(|(d, t)| *d += t),
                    Some(seed) => dropout::add_masked(seed, self.dropout, &t, dx),
                }
            }
        }
        Ok(())
    }
}
