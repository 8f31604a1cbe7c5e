//! Rotary position embeddings: the inverse frequencies as transformers computes them for
//! every scaling the model configs carry (linear, Llama 3, per-frequency factors, LongRoPE's
//! short factors), partial rotary, and the cos / sin tables of one forward pass.

use crate::ops::{self, Ops};
use candle_core::{Result, Tensor, D};
use whetstone_formats::{ModelConfig, RopeScaling};

/// cos and sin tables `[seq, head_dim / 2]` for the positions of one forward pass: the
/// model's rope, and Gemma 3's second one for its sliding layers.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub global: (Tensor, Tensor),
    pub local: Option<(Tensor, Tensor)>,
}

impl RopeTables {
    /// The tables layer `l` rotates with.
    pub fn for_layer(&self, cfg: &ModelConfig, l: usize) -> (&Tensor, &Tensor) {
        match (&self.local, cfg.layer_window(l)) {
            (Some((c, s)), Some(_)) => (c, s),
            _ => (&self.global.0, &self.global.1),
        }
    }
}

/// Rope on the first `dim` dimensions of each head, the rest passed through (Phi-4-mini's
/// partial rotary; all of them elsewhere).
pub(crate) fn rope_part(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    dim: usize,
    ops: Ops,
) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if dim == d {
        return ops::rope(x, cos, sin, ops);
    }
    let rotated = ops::rope(&x.narrow(D::Minus1, 0, dim)?.contiguous()?, cos, sin, ops)?;
    Tensor::cat(&[&rotated, &x.narrow(D::Minus1, dim, d - dim)?], D::Minus1)?.contiguous()
}

/// Unscaled rotary inverse frequencies for `theta`, as transformers computes them.
pub(crate) fn plain_inv_freq(theta: f64, d: usize) -> Vec<f32> {
    (0..d)
        .step_by(2)
        .map(|i| 1.0 / (theta as f32).powf(i as f32 / d as f32))
        .collect()
}

/// Rotary inverse frequencies as transformers computes them, with the configured scaling.
pub fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let base = plain_inv_freq(cfg.rope_theta, cfg.rotary_dim);
    match &cfg.rope_scaling {
        None => base,
        // the short factors: what positions up to the original context use
        Some(RopeScaling::LongRope { short_factor, .. }) => base
            .iter()
            .zip(short_factor)
            .map(|(f, s)| f / *s as f32)
            .collect(),
        Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / *factor as f32).collect(),
        Some(RopeScaling::Factors { factors }) => {
            base.iter().zip(factors).map(|(f, s)| f / s).collect()
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        }) => {
            let (factor, lo, hi, old) = (
                *factor as f32,
                *low_freq_factor as f32,
                *high_freq_factor as f32,
                *old as f32,
            );
            let low_wavelen = old / lo;
            let high_wavelen = old / hi;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - lo) / (hi - lo);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}
