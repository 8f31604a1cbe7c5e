//! AdamW with parameter groups, learning-rate schedules and global-norm clipping.
//!
//! candle's `AdamW` has one learning rate for every variable; LoRA+ needs a higher rate for
//! B, and Full/Freeze runs want no weight decay on norms. Each group here has its own
//! learning-rate multiplier and weight decay. The update is PyTorch's `AdamW` (decoupled
//! decay, bias-corrected moments), and its state saves and loads by parameter name so a
//! resumed run continues exactly.
//!
//! Mixed precision: a parameter stored in bf16 (or f16) for the forward pass gets an f32
//! master copy here. Gradients are widened to f32, the moments and the update are f32, and
//! the variable receives the updated master rounded to its dtype, so updates smaller than
//! bf16's resolution (2⁻⁸ relative) still accumulate. [`AdamW::values`] gives the masters,
//! which is what checkpoints save.

use crate::dtype::is_half;
use crate::params::Param;
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
pub struct AdamWSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

pub struct AdamW {
    pub params: Vec<Param>,
    /// f32 copies of the parameters stored in a half-precision dtype.
    master: Vec<Option<Tensor>>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates applied so far.
    pub step: u64,
    s: AdamWSettings,
}

impl AdamW {
    pub fn new(params: Vec<Param>, s: AdamWSettings) -> Result<Self> {
        let master = params
            .iter()
            .map(|p| match is_half(p.var.dtype()) {
                true => p.var.to_dtype(DType::F32).map(Some),
                false => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let m = params
            .iter()
            .zip(&master)
            .map(|(p, w)| match w {
                Some(w) => w.zeros_like(),
                None => p.var.zeros_like(),
            })
            .collect::<Result<Vec<_>>>()?;
        // separate storage: the fused update writes m and v in place
        let v = m
            .iter()
            .map(|t| t.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            master,
            m,
            v,
            step: 0,
            s,
        })
    }

    /// One update with base learning rate `lr`; `grads[i]` belongs to `params[i]`.
    pub fn apply(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.s.beta1, self.s.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        for (i, p) in self.params.iter().enumerate() {
            let lr = lr * p.lr_scale;
            if self.master[i].is_none() && fused_applies(&[p.var.as_tensor(), &grads[i]]) {
                // in place, one pass per tensor: no temporaries the size of the parameter
                let g = grads[i].contiguous()?;
                self.m[i].inplace_op2(
                    &g,
                    &Moment {
                        beta: b1,
                        square: false,
                    },
                )?;
                self.v[i].inplace_op2(
                    &g,
                    &Moment {
                        beta: b2,
                        square: true,
                    },
                )?;
                let update = Update {
                    lr,
                    decay: p.weight_decay,
                    bc1,
                    bc2,
                    eps: self.s.eps,
                };
                p.var
                    .as_tensor()
                    .inplace_op3(&self.m[i], &self.v[i], &update)?;
                continue;
            }
            let g = grads[i].to_dtype(self.m[i].dtype())?;
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + self.s.eps)?;
            let update = ((&m / bc1)? / denom)?;
            let w = match &self.master[i] {
                Some(w) => w.clone(),
                None => p.var.as_tensor().clone(),
            };
            let w = if p.weight_decay > 0.0 {
                (w * (1.0 - lr * p.weight_decay))?
            } else {
                w
            };
            let w = (w - (update * lr)?)?;
            match &mut self.master[i] {
                Some(master) => {
                    p.var.set(&w.to_dtype(p.var.dtype())?)?;
                    *master = w;
                }
                None => p.var.set(&w)?,
            }
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Each parameter's value by name at full precision (the f32 master where there is one).
    pub fn values(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.master)
            .map(|(p, w)| {
                let t = w.clone().unwrap_or_else(|| p.var.as_tensor().clone());
                (p.name.clone(), t)
            })
            .collect()
    }

    /// Set every parameter from `tensors` (by name, as [`Self::values`] gives them): the
    /// variable in its own dtype, the master copy exactly.
    pub fn load_values(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        crate::params::load_params(&self.params, tensors)?;
        for (p, w) in self.params.iter().zip(&mut self.master) {
            if let (Some(w), Some(t)) = (w, tensors.get(&p.name)) {
                *w = t.to_device(p.var.device())?.to_dtype(DType::F32)?;
            }
        }
        Ok(())
    }

    /// Moments by name: `<param>.exp_avg`, `<param>.exp_avg_sq`. These are the live
    /// tensors, which the next update overwrites in place: save them before it.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            out.insert(format!("{}.exp_avg", p.name), self.m[i].clone());
            out.insert(format!("{}.exp_avg_sq", p.name), self.v[i].clone());
        }
        out
    }

    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            for (suffix, slot) in [("exp_avg", &mut self.m[i]), ("exp_avg_sq", &mut self.v[i])] {
                let key = format!("{}.{suffix}", p.name);
                let t = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no `{key}`"))
                })?;
                if t.dims() != p.var.dims() {
                    candle_core::bail!("optimizer state `{key}` has shape {:?}", t.dims());
                }
                // a copy of its own: updates write the moments in place
                *slot = t
                    .to_device(p.var.device())?
                    .to_dtype(slot.dtype())?
                    .copy()?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Whether the fused update applies: f32 on the CPU, contiguous.
fn fused_applies(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| matches!(t.device(), candle_core::Device::Cpu) && t.dtype() == DType::F32)
        && ts[0].is_contiguous()
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused AdamW: expected contiguous f32"),
    }
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("fused AdamW: expected contiguous f32"),
    }
}

/// A moment in place: `m = β·m + (1 − β)·g`, or with `square` `v = β·v + (1 − β)·g²`.
struct Moment {
    beta: f64,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, l: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        let (m, g) = (f32_slice_mut(dst, l)?, f32_slice(g, gl)?);
        let (b, c) = (self.beta as f32, (1.0 - self.beta) as f32);
        let sq = self.square;
        m.par_chunks_mut(1 << 14)
            .zip(g.par_chunks(1 << 14))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    *m = b * *m + c * if sq { g * g } else { g };
                }
            });
        Ok(())
    }
}

/// The parameter in place: `w = w·(1 − lr·λ) − lr·(m / bc1) / (√(v / bc2) + ε)`.
struct Update {
    lr: f64,
    decay: f64,
    bc1: f64,
    bc2: f64,
    eps: f64,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<()> {
        let w = f32_slice_mut(dst, l)?;
        let (m, v) = (f32_slice(m, ml)?, f32_slice(v, vl)?);
        let keep = (1.0 - self.lr * self.decay) as f32;
        // the reciprocals in f64, rounded once (as candle's `tensor / f64` does)
        let (lr, eps) = (self.lr as f32, self.eps as f32);
        let (ibc1, ibc2) = ((1.0 / self.bc1) as f32, (1.0 / self.bc2) as f32);
        w.par_chunks_mut(1 << 14)
            .zip(m.par_chunks(1 << 14))
            .zip(v.par_chunks(1 << 14))
            .for_each(|((w, m), v)| {
                for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                    *w = *w * keep - lr * ((m * ibc1) / ((v * ibc2).sqrt() + eps));
                }
            });
        Ok(())
    }
}

/// How the learning rate decays after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

/// The learning rate at optimizer step `step` (0-based) of `total`.
pub fn lr_at(schedule: Schedule, base: f64, step: u64, total: u64, warmup: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// The global L2 norm of all gradients.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads {
        total += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Scale the gradients so their global norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let k = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * k)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn adamw_matches_the_pytorch_formula() {
        // One parameter, two steps, values worked by hand from torch.optim.AdamW's docs.
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let p = Param {
            name: "w".into(),
            var: var.clone(),
            lr_scale: 1.0,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(vec![p], AdamWSettings::default()).unwrap();
        let g = Tensor::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
        opt.apply(std::slice::from_ref(&g), 0.01).unwrap();
        // step 1: m̂ = g, v̂ = g², update = g/|g| = ±1; w = w(1 - lr·wd) - lr·sign(g)
        let w = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((w[0] - (1.0 * 0.999 - 0.01)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-2.0 * 0.999 + 0.01)).abs() < 1e-6, "{w:?}");
        // state survives a save/load round trip
        let state = opt.state_tensors();
        let mut again = AdamW::new(opt.params.clone(), AdamWSettings::default()).unwrap();
        again.load_state(&state, opt.step).unwrap();
        opt.apply(std::slice::from_ref(&g), 0.01).unwrap();
        let before = var.as_tensor().to_vec1::<f32>().unwrap();
        assert_ne!(before, w);
    }

    #[test]
    fn bf16_parameters_keep_an_f32_master_that_accumulates_tiny_updates() {
        // 1.0 in bf16 has a resolution of 2⁻⁷: 1e-4 steps are lost without a master copy
        let var = Var::new(&[1.0f32, 1.0], &Device::Cpu)
            .unwrap()
            .as_tensor()
            .to_dtype(DType::BF16)
            .unwrap();
        let var = Var::from_tensor(&var).unwrap();
        let p = Param {
            name: "w".into(),
            var: var.clone(),
            lr_scale: 1.0,
            weight_decay: 0.0,
        };
        let mut opt = AdamW::new(vec![p], AdamWSettings::default()).unwrap();
        let g = Tensor::new(&[1.0f32, -1.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        for _ in 0..100 {
            opt.apply(std::slice::from_ref(&g), 1e-4).unwrap();
        }
        let (name, master) = &opt.values()[0];
        assert_eq!(name, "w");
        assert_eq!(master.dtype(), DType::F32);
        let m = master.to_vec1::<f32>().unwrap();
        assert!(
            (m[0] - 0.99).abs() < 1e-5 && (m[1] - 1.01).abs() < 1e-5,
            "{m:?}"
        );
        // the variable is the master rounded to bf16, not 100 rounded steps (which stay at 1)
        assert_eq!(var.dtype(), DType::BF16);
        let v = var
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            (v[0] - 0.99).abs() < 4e-3 && (v[1] - 1.01).abs() < 8e-3,
            "{v:?}"
        );
        assert!(opt
            .state_tensors()
            .values()
            .all(|t| t.dtype() == DType::F32));
        // loading values restores the master exactly, not from the rounded variable
        let saved: HashMap<String, Tensor> = opt.values().into_iter().collect();
        let mut again = AdamW::new(opt.params.clone(), AdamWSettings::default()).unwrap();
        again.load_values(&saved).unwrap();
        assert_eq!(again.values()[0].1.to_vec1::<f32>().unwrap(), m);
    }

    #[test]
    fn schedules_warm_up_then_decay() {
        let f = |s| lr_at(Schedule::Cosine, 1.0, s, 100, 10);
        assert!((f(0) - 0.1).abs() < 1e-12);
        assert!((f(9) - 1.0).abs() < 1e-12);
        assert!((f(10) - 1.0).abs() < 1e-12);
        assert!((f(55) - 0.5).abs() < 1e-12);
        assert!(f(99) < 0.01);
        assert_eq!(lr_at(Schedule::Constant, 2.0, 50, 100, 0), 2.0);
        assert!((lr_at(Schedule::Linear, 1.0, 50, 100, 0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = vec![
            Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            Tensor::new(&[4.0f32], &Device::Cpu).unwrap(),
        ];
        let n = clip(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
    }
}
