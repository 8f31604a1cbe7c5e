//! One parametrised decoder-only transformer for the Llama layout, Qwen2, Qwen3, Mistral and
//! SmolLM3.
//!
//! The families differ only in configuration (biases, rope settings, tied embeddings,
//! grouped-query heads, Qwen3's per-head q/k norms, SmolLM3's layers without rope,
//! sliding-window layers), so there is one implementation. Weights are taken by their HF
//! names from `whetstone_formats::Weights`; a missing, misshapen or unused tensor is an error.

use crate::linear::{BaseWeight, Linear, TrainMode};
use crate::ops::{self, Ops};
use crate::quant::Nf4Tensor;
use crate::rope::{plain_inv_freq, rope_inv_freq, rope_part, RopeTables};
use candle_core::{DType, Device, Result, Tensor, D};
use std::sync::Arc;
use whetstone_formats::{Activation, FileError, ModelConfig, RopeScaling, Weights};

#[derive(Debug, Clone)]
pub struct Attention {
    /// q, or with fused projections (Phi-3) q, k and v in one module (`qkv_proj`).
    pub q_proj: Linear,
    /// `None` with fused projections.
    pub k_proj: Option<Linear>,
    pub v_proj: Option<Linear>,
    pub o_proj: Linear,
    /// Qwen3: RMSNorm weights `[head_dim]` applied to each head of q and of k before rope.
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub struct Mlp {
    /// gate, or with fused projections gate and up in one module (`gate_up_proj`).
    pub gate_proj: Linear,
    /// `None` with fused projections.
    pub up_proj: Option<Linear>,
    pub down_proj: Linear,
}

/// A Houlsby bottleneck: `h + up(relu(down(h)))`.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    pub down: Linear,
    pub up: Linear,
}

impl Bottleneck {
    pub fn forward(&self, h: &Tensor, mode: &TrainMode) -> Result<Tensor> {
        let z = self.down.forward_mode(h, mode)?.relu()?;
        h + self.up.forward_mode(&z, mode)?
    }
}

/// Prefix tuning and P-Tuning v2: learned keys and values that every layer's attention sees
/// before the sequence, like a KV cache of `n_virtual` positions that no token produced.
#[derive(Debug, Clone)]
pub struct Prefix {
    /// With `mlp`: the MLP's input `[n_virtual, kv]`. Without: the prefixes themselves,
    /// `[n_virtual, layers · 2 · kv]` (`kv` = key/value heads × head size).
    pub embedding: Tensor,
    /// Prefix tuning's reparameterisation `Linear(kv, hidden) → tanh → Linear(hidden,
    /// layers · 2 · kv)`, used while training and folded into the prefixes at save.
    pub mlp: Option<(Linear, Linear)>,
}

impl Prefix {
    pub fn n_virtual(&self) -> usize {
        self.embedding.dims()[0]
    }

    /// All layers' prefixes `[n_virtual, layers · 2 · kv]` in PEFT's layout: layer `l`'s keys
    /// are columns `2l·kv ..`, its values the next `kv`.
    pub fn past(&self, mode: &TrainMode) -> Result<Tensor> {
        match &self.mlp {
            None => Ok(self.embedding.clone()),
            Some((first, second)) => {
                let h = first.forward_mode(&self.embedding, mode)?.tanh()?;
                second.forward_mode(&h, mode)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub input_layernorm: Tensor,
    pub self_attn: Attention,
    /// The MLP's input norm, or with sandwich norms (Gemma) the attention output's norm.
    pub post_attention_layernorm: Tensor,
    /// Gemma: the MLP's input norm and its output's norm.
    pub pre_feedforward_layernorm: Option<Tensor>,
    pub post_feedforward_layernorm: Option<Tensor>,
    pub mlp: Mlp,
    /// Houlsby adapters after the attention output and after the FFN output.
    pub adapters: Option<(Bottleneck, Bottleneck)>,
}

/// Keys and values of earlier positions, one `(k, v)` per layer, `[b, kv_heads, T, d]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// Layer `l`'s cached keys and values.
    pub fn layer(&self, l: usize) -> Option<(Tensor, Tensor)> {
        self.layers.get(l).cloned().flatten()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dim(2).unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct DecoderModel {
    pub config: ModelConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    /// `None` when the output projection is tied to `embed_tokens`.
    pub lm_head: Option<Tensor>,
    /// Rotary inverse frequencies `[head_dim / 2]` (f32), scaling already applied.
    inv_freq: Vec<f32>,
    /// Gemma 3: the sliding layers' own (unscaled) inverse frequencies.
    local_inv_freq: Option<Vec<f32>>,
    /// LongRoPE: the frequencies for sequences past the original context, that context's
    /// length, and the factor on cos and sin.
    long_rope: Option<(Vec<f32>, usize, f32)>,
    pub dtype: DType,
    pub device: Device,
    /// Training flag and dropout stream (inference leaves it off).
    pub mode: Arc<TrainMode>,
    /// Prompt tuning: `[n_virtual, hidden]` embeddings placed before every sequence at
    /// positions `0..n`, so the real tokens start at position `n` (as PEFT does).
    pub prompt: Option<Tensor>,
    /// Prefix tuning / P-Tuning v2: per-layer key/value prefixes at positions `0..n`; the
    /// real tokens start at position `n`, as in PEFT (transformers counts the prefix as past).
    pub prefix: Option<Prefix>,
}

/// Weights stored as NF4 while loading, by HF name (see [`crate::load_model_with`]).
pub type Quantized = std::collections::HashMap<String, Nf4Tensor>;

fn linear(
    w: &mut Weights,
    q: &mut Quantized,
    prefix: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> std::result::Result<Linear, FileError> {
    let name = format!("{prefix}.weight");
    let weight = match q.remove(&name) {
        Some(t) if t.dims() != (out, inp) => {
            return Err(FileError::new(
                &w.source,
                format!(
                    "tensor `{name}` has shape {:?}, the config implies {:?}",
                    t.dims(),
                    (out, inp)
                ),
            ))
        }
        Some(t) => BaseWeight::Nf4(Arc::new(t)),
        None => BaseWeight::Dense(w.take(&name, &[out, inp])?),
    };
    let bias = if bias {
        Some(w.take(&format!("{prefix}.bias"), &[out])?)
    } else {
        None
    };
    Ok(Linear {
        weight,
        bias,
        adapter: None,
    })
}

impl DecoderModel {
    /// Build the model from config and weights; every weight must be used exactly once.
    pub fn new(
        config: &ModelConfig,
        w: Weights,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, FileError> {
        Self::new_with(config, w, Quantized::new(), dtype, device)
    }

    /// [`Self::new`] where some linear weights arrive already quantized.
    pub fn new_with(
        config: &ModelConfig,
        mut w: Weights,
        mut quantized: Quantized,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, FileError> {
        let c = config;
        let (h, q, kv, i) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
            c.intermediate_size,
        );
        let embed_tokens = w.take("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                input_layernorm: w.take(&format!("{p}.input_layernorm.weight"), &[h])?,
                self_attn: Attention {
                    q_proj: linear(
                        &mut w,
                        &mut quantized,
                        &format!(
                            "{p}.self_attn.{}",
                            if c.fused_projections {
                                "qkv_proj"
                            } else {
                                "q_proj"
                            }
                        ),
                        if c.fused_projections { q + 2 * kv } else { q },
                        h,
                        c.qkv_bias,
                    )?,
                    k_proj: match c.fused_projections {
                        true => None,
                        false => Some(linear(
                            &mut w,
                            &mut quantized,
                            &format!("{p}.self_attn.k_proj"),
                            kv,
                            h,
                            c.qkv_bias,
                        )?),
                    },
                    v_proj: match c.fused_projections {
                        true => None,
                        false => Some(linear(
                            &mut w,
                            &mut quantized,
                            &format!("{p}.self_attn.v_proj"),
                            kv,
                            h,
                            c.qkv_bias,
                        )?),
                    },
                    o_proj: linear(
                        &mut w,
                        &mut quantized,
                        &format!("{p}.self_attn.o_proj"),
                        h,
                        q,
                        c.o_bias,
                    )?,
                    q_norm: match c.qk_norm {
                        true => {
                            Some(w.take(&format!("{p}.self_attn.q_norm.weight"), &[c.head_dim])?)
                        }
                        false => None,
                    },
                    k_norm: match c.qk_norm {
                        true => {
                            Some(w.take(&format!("{p}.self_attn.k_norm.weight"), &[c.head_dim])?)
                        }
                        false => None,
                    },
                },
                post_attention_layernorm: w
                    .take(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                pre_feedforward_layernorm: match c.sandwich_norms {
                    true => Some(w.take(&format!("{p}.pre_feedforward_layernorm.weight"), &[h])?),
                    false => None,
                },
                post_feedforward_layernorm: match c.sandwich_norms {
                    true => Some(w.take(&format!("{p}.post_feedforward_layernorm.weight"), &[h])?),
                    false => None,
                },
                mlp: Mlp {
                    gate_proj: linear(
                        &mut w,
                        &mut quantized,
                        &format!(
                            "{p}.mlp.{}",
                            if c.fused_projections {
                                "gate_up_proj"
                            } else {
                                "gate_proj"
                            }
                        ),
                        if c.fused_projections { 2 * i } else { i },
                        h,
                        c.mlp_bias,
                    )?,
                    up_proj: match c.fused_projections {
                        true => None,
                        false => Some(linear(
                            &mut w,
                            &mut quantized,
                            &format!("{p}.mlp.up_proj"),
                            i,
                            h,
                            c.mlp_bias,
                        )?),
                    },
                    down_proj: linear(
                        &mut w,
                        &mut quantized,
                        &format!("{p}.mlp.down_proj"),
                        h,
                        i,
                        c.mlp_bias,
                    )?,
                },
                adapters: None,
            });
        }
        let norm = w.take("model.norm.weight", &[h])?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(w.take("lm_head.weight", &[c.vocab_size, h])?)
        };
        if let Some(name) = quantized.keys().next() {
            return Err(FileError::new(
                &w.source,
                format!("quantized tensor `{name}` is not part of this model"),
            ));
        }
        w.finish()?;
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq: rope_inv_freq(config),
            local_inv_freq: config
                .local_rope_theta
                .map(|t| plain_inv_freq(t, config.head_dim)),
            long_rope: match &config.rope_scaling {
                Some(RopeScaling::LongRope {
                    long_factor,
                    original_max_position_embeddings,
                    attention_factor,
                    ..
                }) => Some((
                    plain_inv_freq(config.rope_theta, config.rotary_dim)
                        .iter()
                        .zip(long_factor)
                        .map(|(f, s)| f / *s as f32)
                        .collect(),
                    *original_max_position_embeddings as usize,
                    *attention_factor as f32,
                )),
                _ => None,
            },
            dtype,
            device: device.clone(),
            mode: Arc::new(TrainMode::default()),
            prompt: None,
            prefix: None,
        })
    }

    /// A KV cache holding the prefixes of every layer for a batch of `b` (graph-connected to
    /// the prefix parameters), or `None` without prefix tuning.
    pub fn prefix_cache(&self, b: usize) -> Result<Option<KvCache>> {
        let Some(prefix) = &self.prefix else {
            return Ok(None);
        };
        let c = &self.config;
        let kv = c.num_kv_heads * c.head_dim;
        let n = prefix.n_virtual();
        let past = prefix.past(&self.mode)?.to_dtype(self.dtype)?;
        let mut cache = KvCache::new(c.num_layers);
        for (l, slot) in cache.layers.iter_mut().enumerate() {
            let part = |i: usize| -> Result<Tensor> {
                past.narrow(1, (2 * l + i) * kv, kv)?
                    .reshape((n, c.num_kv_heads, c.head_dim))?
                    .transpose(0, 1)?
                    .unsqueeze(0)?
                    .broadcast_as((b, c.num_kv_heads, n, c.head_dim))?
                    .contiguous()
            };
            *slot = Some((part(0)?, part(1)?));
        }
        Ok(Some(cache))
    }

    /// cos and sin tables for absolute positions `offset..offset + seq`.
    pub fn rope_tables(&self, offset: usize, seq: usize) -> Result<RopeTables> {
        // LongRoPE: the long factors once the sequence passes the original context (as
        // transformers decides per forward pass), cos and sin scaled either way
        let (global, scale) = match &self.long_rope {
            Some((long, original, factor)) if offset + seq > *original => (long, *factor),
            Some((_, _, factor)) => (&self.inv_freq, *factor),
            None => (&self.inv_freq, 1.0),
        };
        let table = |inv_freq: &[f32]| -> Result<(Tensor, Tensor)> {
            let half = inv_freq.len();
            let mut cos = Vec::with_capacity(seq * half);
            let mut sin = Vec::with_capacity(seq * half);
            for p in offset..offset + seq {
                for f in inv_freq {
                    let a = p as f32 * f;
                    cos.push(a.cos() * scale);
                    sin.push(a.sin() * scale);
                }
            }
            let cos = Tensor::from_vec(cos, (seq, half), &self.device)?.to_dtype(self.dtype)?;
            let sin = Tensor::from_vec(sin, (seq, half), &self.device)?.to_dtype(self.dtype)?;
            Ok((cos, sin))
        };
        Ok(RopeTables {
            global: table(global)?,
            local: self.local_inv_freq.as_deref().map(table).transpose()?,
        })
    }

    /// LongRoPE's original context: past it, the rope uses its long factors.
    pub fn long_rope_context(&self) -> Option<usize> {
        self.long_rope.as_ref().map(|(_, original, _)| *original)
    }

    /// RMSNorm with this family's weight convention: `x̂ · w`, or for Gemma `x̂ · (1 + w)`
    /// computed in f32 and rounded once (as transformers' Gemma norms do).
    pub fn norm(&self, x: &Tensor, w: &Tensor, ops: Ops) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        if !self.config.unit_offset_norms {
            return ops::rms_norm(x, w, eps, ops);
        }
        let wide = crate::dtype::wide_dtype(x.dtype());
        let ones = Tensor::ones(w.dims(), wide, w.device())?;
        let normed = ops::rms_norm(&x.to_dtype(wide)?, &ones, eps, ops)?;
        normed
            .broadcast_mul(&(w.to_dtype(wide)? + 1.0)?)?
            .to_dtype(x.dtype())
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: usize,
        attn: &Attention,
        x: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        offset: usize,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        ops: Ops,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, _) = x.dims3()?;
        // [b, heads, t, d], each head normalised first where the family does (Qwen3)
        let shape = |y: Tensor, heads: usize, norm: Option<&Tensor>| -> Result<Tensor> {
            let y = y.reshape((b, t, heads, c.head_dim))?;
            let y = match norm {
                Some(w) => self.norm(&y, w, ops)?,
                None => y,
            };
            y.transpose(1, 2)
        };
        let (q, k, v) = match (&attn.k_proj, &attn.v_proj) {
            (Some(k), Some(v)) => (
                attn.q_proj.forward_mode(x, &self.mode)?,
                k.forward_mode(x, &self.mode)?,
                v.forward_mode(x, &self.mode)?,
            ),
            // one fused projection: rows q, then k, then v
            _ => {
                let qkv = attn.q_proj.forward_mode(x, &self.mode)?;
                let (nq, nkv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
                (
                    qkv.narrow(D::Minus1, 0, nq)?,
                    qkv.narrow(D::Minus1, nq, nkv)?,
                    qkv.narrow(D::Minus1, nq + nkv, nkv)?,
                )
            }
        };
        let q = shape(q, c.num_heads, attn.q_norm.as_ref())?;
        let k = shape(k, c.num_kv_heads, attn.k_norm.as_ref())?;
        let v = shape(v, c.num_kv_heads, None)?.contiguous()?;
        let (q, k) = if c.layer_uses_rope(l) {
            (
                rope_part(&q, cos, sin, c.rotary_dim, ops)?,
                rope_part(&k, cos, sin, c.rotary_dim, ops)?,
            )
        } else {
            (q, k)
        };
        let (k, v) = match cache {
            Some(slot) => {
                let kv = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                *slot = Some(kv.clone());
                kv
            }
            None => (k, v),
        };
        let n_rep = c.num_heads / c.num_kv_heads;
        let k = ops::repeat_kv(&k, n_rep)?.contiguous()?;
        let v = ops::repeat_kv(&v, n_rep)?.contiguous()?;
        let how = ops::Scores {
            window: c.layer_window(l),
            scale: c.query_pre_attn_scalar.map(|s| 1.0 / s.sqrt()),
            softcap: c.attn_softcap,
        };
        let y = ops::attention(&q.contiguous()?, &k, &v, offset, how, ops)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, t, c.num_heads * c.head_dim))?;
        attn.o_proj.forward_mode(&y, &self.mode)
    }

    /// Token embeddings `[b, t, hidden]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let x = self
            .embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        if self.config.scale_embeddings {
            // √hidden rounded to the weights' dtype first, as transformers' Gemma does
            let scale = Tensor::new(&[(self.config.hidden_size as f64).sqrt()], x.device())?
                .to_dtype(x.dtype())?;
            x.broadcast_mul(&scale)
        } else {
            Ok(x)
        }
    }

    /// One decoder layer: pre-norm attention and gated MLP, each with a residual (with
    /// sandwich norms, each sublayer's output is normalised before it is added).
    pub fn layer_forward(
        &self,
        l: usize,
        x: &Tensor,
        rope: &RopeTables,
        offset: usize,
        slot: Option<&mut Option<(Tensor, Tensor)>>,
        ops: Ops,
    ) -> Result<Tensor> {
        let c = &self.config;
        let layer = &self.layers[l];
        let h = self.norm(x, &layer.input_layernorm, ops)?;
        let rope = rope.for_layer(c, l);
        let a = self.attention(l, &layer.self_attn, &h, rope, offset, slot, ops)?;
        let (pre_mlp, a) = match &layer.pre_feedforward_layernorm {
            Some(pre) => (pre, self.norm(&a, &layer.post_attention_layernorm, ops)?),
            None => (&layer.post_attention_layernorm, a),
        };
        let a = match &layer.adapters {
            Some((after_attn, _)) => after_attn.forward(&a, &self.mode)?,
            None => a,
        };
        let x = (x + a)?;
        let h = self.norm(&x, pre_mlp, ops)?;
        let m = &layer.mlp;
        let (gate, up) = match &m.up_proj {
            Some(up) => (
                m.gate_proj.forward_mode(&h, &self.mode)?,
                up.forward_mode(&h, &self.mode)?,
            ),
            // one fused projection: rows gate, then up
            None => {
                let gu = m.gate_proj.forward_mode(&h, &self.mode)?;
                let i = c.intermediate_size;
                (gu.narrow(D::Minus1, 0, i)?, gu.narrow(D::Minus1, i, i)?)
            }
        };
        let act = match c.activation {
            Activation::Silu => ops::swiglu(&gate, &up)?,
            Activation::GeluTanh => ops::geglu_tanh(&gate, &up)?,
        };
        let y = m.down_proj.forward_mode(&act, &self.mode)?;
        let y = match &layer.post_feedforward_layernorm {
            Some(post) => self.norm(&y, post, ops)?,
            None => y,
        };
        let y = match &layer.adapters {
            Some((_, after_ffn)) => after_ffn.forward(&y, &self.mode)?,
            None => y,
        };
        x + y
    }

    /// The final norm.
    pub fn final_norm(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        self.norm(x, &self.norm, ops)
    }

    /// The first layer's input for `ids` at real-token `offset`: the token embeddings, with
    /// the virtual prompt in front when the sequence starts here. Returns the input, the
    /// absolute position of its first row, and how many virtual rows lead it.
    pub fn layer_input(&self, ids: &Tensor, offset: usize) -> Result<(Tensor, usize, usize)> {
        let x = self.embed(ids)?;
        if let Some(p) = &self.prefix {
            return Ok((x, offset + p.n_virtual(), 0));
        }
        match &self.prompt {
            None => Ok((x, offset, 0)),
            Some(p) if offset == 0 => {
                let (b, _, h) = x.dims3()?;
                let n = p.dim(0)?;
                let p = p
                    .to_dtype(x.dtype())?
                    .unsqueeze(0)?
                    .broadcast_as((b, n, h))?;
                Ok((Tensor::cat(&[&p, &x], 1)?, 0, n))
            }
            Some(p) => Ok((x, offset + p.dim(0)?, 0)),
        }
    }

    /// Hidden states after the final norm, `[b, t, hidden]` (real tokens only).
    pub fn hidden_states(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: Option<&mut KvCache>,
        ops: Ops,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let (mut x, start, lead) = self.layer_input(ids, offset)?;
        let rope = self.rope_tables(start, x.dim(1)?)?;
        // prefixes enter as a KV cache filled before the first token
        let mut own;
        let mut cache = match cache {
            Some(c) if self.prefix.is_some() && c.is_empty() => {
                if let Some(p) = self.prefix_cache(b)? {
                    *c = p;
                }
                Some(c)
            }
            None if self.prefix.is_some() => {
                own = self.prefix_cache(b)?;
                own.as_mut()
            }
            other => other,
        };
        for l in 0..self.layers.len() {
            let slot = cache.as_deref_mut().map(|kv| &mut kv.layers[l]);
            x = self.layer_forward(l, &x, &rope, start, slot, ops)?;
        }
        if lead > 0 {
            x = x.narrow(1, lead, t)?;
        }
        self.final_norm(&x, ops)
    }

    /// Project hidden states to vocabulary logits.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let logits = if self.mode.training() {
            crate::linear::frozen_linear(hidden, w)?
        } else {
            crate::linear::dense_product(hidden, w)?
        };
        match self.config.final_softcap {
            Some(c) => ops::softcap(&logits, c),
            None => Ok(logits),
        }
    }

    /// Logits for every position, `[b, t, vocab]`.
    pub fn forward(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: Option<&mut KvCache>,
        ops: Ops,
    ) -> Result<Tensor> {
        let h = self.hidden_states(ids, offset, cache, ops)?;
        self.logits(&h)
    }

    /// Logits of the last position only, `[b, vocab]` (generation).
    pub fn forward_last(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let h = self.hidden_states(ids, offset, cache, Ops::Fused)?;
        let t = h.dim(1)?;
        self.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)
    }

    /// Per-position next-token negative log-likelihood of `ids` (one sequence), in nats:
    /// `tokens - 1` values.
    pub fn token_nll(&self, ids: &[u32], ops: Ops) -> Result<Vec<f32>> {
        if ids.len() < 2 {
            return Ok(vec![]);
        }
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let logits = self.forward(&input, 0, None, ops)?.squeeze(0)?;
        let n = ids.len() - 1;
        let logits = logits.narrow(0, 0, n)?.to_dtype(DType::F32)?;
        let logp = ops::log_softmax_last_dim(&logits)?;
        let targets = Tensor::new(&ids[1..], &self.device)?.unsqueeze(1)?;
        logp.gather(&targets, D::Minus1)?
            .squeeze(1)?
            .neg()?
            .to_vec1::<f32>()
    }
}

/// What takes a model's architecture beyond the plain pre-norm Llama decoder (the one the
/// explicit training path computes), or `None`; the estimator asks too, since the two
/// training paths keep different activations.
pub fn beyond_plain_decoder(c: &ModelConfig) -> Option<&'static str> {
    let checks = [
        (c.qk_norm, "per-head q/k norms"),
        (c.sandwich_norms, "sandwich norms"),
        (c.unit_offset_norms, "(1 + w) norms"),
        (c.scale_embeddings, "scaled embeddings"),
        (c.activation != Activation::Silu, "not SwiGLU"),
        (
            c.attn_softcap.is_some() || c.final_softcap.is_some(),
            "soft-capping",
        ),
        (c.fused_projections, "fused projections"),
        (c.rotary_dim != c.head_dim, "partial rotary"),
        (
            (0..c.num_layers).any(|l| c.layer_window(l).is_some()),
            "sliding windows",
        ),
        (
            (0..c.num_layers).any(|l| !c.layer_uses_rope(l)),
            "layers without rope",
        ),
    ];
    checks.iter().find(|(bad, _)| *bad).map(|(_, why)| *why)
}
