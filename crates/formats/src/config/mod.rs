//! The architecture of a decoder-only model, normalised from wherever it was described:
//! an HF `config.json` or the metadata of a GGUF file.
//!
//! One struct serves the Llama layout (SmolLM2, Llama 2/3, TinyLlama), Qwen2, Qwen3, Mistral
//! and SmolLM3: they differ in which projections carry a bias, the rope settings, Qwen3's
//! per-head q/k norms, SmolLM3's layers without rope, sliding-window layers and the defaults.

use crate::error::FileError;
use candle_core::quantized::gguf_file;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
    Mistral,
    SmolLM3,
    Gemma2,
    Gemma3,
    Phi3,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Mistral => "mistral",
            Family::SmolLM3 => "smollm3",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3",
            Family::Phi3 => "phi3",
        }
    }

    /// Gemma 2 and Gemma 3's text models share their layer layout.
    pub fn is_gemma(self) -> bool {
        matches!(self, Family::Gemma2 | Family::Gemma3)
    }

    /// The families an HF `model_type` names, for error messages.
    pub const SUPPORTED: &'static str =
        "llama, qwen2, qwen3, mistral, smollm3, gemma2, gemma3_text, phi3";
}

/// How rotary frequencies are adjusted for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Positions divided by `factor` (HF `rope_type: linear`).
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent scaling (HF `rope_type: llama3`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Per-frequency divisors, as llama.cpp stores Llama 3.1 scaling (`rope_freqs.weight`).
    Factors { factors: Vec<f32> },
    /// Phi-3's LongRoPE (HF `rope_type: longrope`, formerly `su`): per-frequency divisors,
    /// the short ones up to `original_max_position_embeddings` positions and the long ones
    /// beyond, and cos / sin multiplied by `attention_factor`.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: f64,
        attention_factor: f64,
    },
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// SwiGLU: `silu(gate) · up`.
    Silu,
    /// GeGLU with the tanh approximation (`gelu_pytorch_tanh`): Gemma.
    GeluTanh,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// The output projection carries a bias (Llama with `attention_bias`).
    pub o_bias: bool,
    /// gate/up/down carry a bias (Llama with `mlp_bias`).
    pub mlp_bias: bool,
    /// Qwen3: an RMSNorm over each head of q and of k, before the rope (`q_norm`, `k_norm`,
    /// weights `[head_dim]`).
    pub qk_norm: bool,
    /// Per layer, whether q and k are rotated (SmolLM3 leaves every fourth layer without
    /// rope); empty when every layer is.
    pub rope_layers: Vec<bool>,
    /// The window of sliding-window attention: a query sees at most this many keys, itself
    /// included, on the layers `sliding_layers` marks.
    pub sliding_window: Option<usize>,
    /// Per layer, whether its attention slides; empty when none does.
    pub sliding_layers: Vec<bool>,
    /// Dropout the family's transformers class applies in train mode, by config key
    /// (`attention_dropout`; Phi-3's `resid_pdrop`, `embd_pdrop`), where it is not zero.
    /// Whetstone refuses to train a model that sets any (see the trainer).
    pub dropouts: Vec<(String, f64)>,
    /// The MLP's gate activation.
    pub activation: Activation,
    /// Gemma: RMSNorm weights are offsets from one (`x̂ · (1 + w)`, computed in f32).
    pub unit_offset_norms: bool,
    /// Gemma: token embeddings are multiplied by √hidden (rounded to the weights' dtype).
    pub scale_embeddings: bool,
    /// Gemma: the attention and MLP outputs are normalised before their residual add
    /// (`post_attention_layernorm`, `post_feedforward_layernorm`) and the MLP's input by
    /// `pre_feedforward_layernorm`.
    pub sandwich_norms: bool,
    /// Gemma: scores are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2: attention scores soft-capped as `c·tanh(s/c)` before the mask.
    pub attn_softcap: Option<f64>,
    /// Gemma 2: output logits soft-capped as `c·tanh(z/c)`.
    pub final_softcap: Option<f64>,
    /// Gemma 3: the rope theta of sliding-window layers (no scaling); `None` when every
    /// layer uses `rope_theta` and `rope_scaling`.
    pub local_rope_theta: Option<f64>,
    /// How many leading dimensions of each head the rope rotates (`head_dim` unless a
    /// `partial_rotary_factor` says less: Phi-4-mini rotates three quarters).
    pub rotary_dim: usize,
    /// Phi-3: q, k and v are one module (`qkv_proj`, rows q then k then v) and gate and up
    /// another (`gate_up_proj`, rows gate then up).
    pub fused_projections: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Whether layer `l` rotates its queries and keys.
    pub fn layer_uses_rope(&self, l: usize) -> bool {
        self.rope_layers.get(l).copied().unwrap_or(true)
    }

    /// The attention window of layer `l`: `None` for full causal attention.
    pub fn layer_window(&self, l: usize) -> Option<usize> {
        match self.sliding_layers.get(l) {
            Some(true) => self.sliding_window,
            _ => None,
        }
    }

    /// Parameters of the base model, counted from the shapes this config implies.
    pub fn parameter_count(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = (self.num_heads * self.head_dim) as u64;
        let kv = (self.num_kv_heads * self.head_dim) as u64;
        let i = self.intermediate_size as u64;
        let mut layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
        if self.qkv_bias {
            layer += q + 2 * kv;
        }
        if self.o_bias {
            layer += h;
        }
        if self.mlp_bias {
            layer += 2 * i + h;
        }
        if self.qk_norm {
            layer += 2 * self.head_dim as u64;
        }
        if self.sandwich_norms {
            layer += 2 * h;
        }
        let embed = self.vocab_size as u64 * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + h + layer * self.num_layers as u64
    }

    pub(super) fn validate(&self, path: &Path) -> Result<(), FileError> {
        let bad =
            |field: &str, why: String| FileError::new(path, format!("field `{field}`: {why}"));
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                return Err(bad(field, "must be a positive integer, got 0".into()));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads = {}",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(bad(
                "head_dim",
                format!(
                    "{} is odd; rotary embeddings need an even head size",
                    self.head_dim
                ),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return Err(bad(
                "rms_norm_eps",
                format!("{} is not in (0, 1)", self.rms_norm_eps),
            ));
        }
        if let Some(t) = self
            .local_rope_theta
            .filter(|t| !(t.is_finite() && *t > 1.0))
        {
            return Err(bad(
                "rope_local_base_freq",
                format!("{t} must be a number > 1"),
            ));
        }
        for (key, p) in &self.dropouts {
            if !(0.0..1.0).contains(p) {
                return Err(bad(key, format!("{p} is not in [0, 1)")));
            }
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(bad(
                "rope_theta",
                format!("{} must be a number > 1", self.rope_theta),
            ));
        }
        for (field, v) in [
            ("no_rope_layers", &self.rope_layers),
            ("layer_types", &self.sliding_layers),
        ] {
            if !v.is_empty() && v.len() != self.num_layers {
                return Err(bad(
                    field,
                    format!(
                        "has {} entries, num_hidden_layers = {}",
                        v.len(),
                        self.num_layers
                    ),
                ));
            }
        }
        if self.sliding_layers.iter().any(|&s| s) {
            match self.sliding_window {
                None => {
                    return Err(bad(
                        "sliding_window",
                        "missing, but some layers are sliding_attention".into(),
                    ))
                }
                Some(0) => return Err(bad("sliding_window", "must be at least 1, got 0".into())),
                Some(_) => {}
            }
        }
        if let Some(RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        }) = &self.rope_scaling
        {
            for (field, f) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                if f.len() != self.rotary_dim / 2 {
                    return Err(bad(
                        field,
                        format!(
                            "has {} values, expected one per rotated pair ({})",
                            f.len(),
                            self.rotary_dim / 2
                        ),
                    ));
                }
            }
        }
        if self.rotary_dim == 0 || self.rotary_dim > self.head_dim || self.rotary_dim % 2 == 1 {
            return Err(bad(
                "partial_rotary_factor",
                format!(
                    "rotates {} of {} dimensions",
                    self.rotary_dim, self.head_dim
                ),
            ));
        }
        if let Some(RopeScaling::Factors { factors }) = &self.rope_scaling {
            if factors.len() != self.head_dim / 2 {
                return Err(bad(
                    "rope_freqs",
                    format!(
                        "has {} values, expected head_dim / 2 = {}",
                        factors.len(),
                        self.head_dim / 2
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The `query_pre_attn_scalar` llama.cpp's Gemma graphs use: `head_dim`, except for the 27B
/// models (46 layers for Gemma 2, 62 for Gemma 3), which use `hidden / heads`.
pub fn gemma_query_scalar(
    family: Family,
    num_layers: usize,
    hidden_size: usize,
    num_heads: usize,
    head_dim: usize,
) -> f64 {
    let big = matches!(
        (family, num_layers),
        (Family::Gemma2, 46) | (Family::Gemma3, 62)
    );
    if big {
        (hidden_size / num_heads) as f64
    } else {
        head_dim as f64
    }
}

/// More layers than any published model has (the largest have about 130): a bound on what
/// per-layer lists a config may make the reader allocate.
pub const MAX_LAYERS: usize = 4096;

/// llama.cpp's architecture string for a family (Mistral converts as `llama`).
pub fn gguf_architecture(family: Family) -> &'static str {
    match family {
        Family::Llama | Family::Mistral => "llama",
        Family::Qwen2 => "qwen2",
        Family::Qwen3 => "qwen3",
        Family::SmolLM3 => "smollm3",
        Family::Gemma2 => "gemma2",
        Family::Gemma3 => "gemma3",
        Family::Phi3 => "phi3",
    }
}

/// Whether llama.cpp's converter permuted this architecture's Q and K rows (it does for the
/// architectures whose rope rotates adjacent pairs: `llama` and `smollm3`).
pub fn permutes_qk(family: Family) -> bool {
    matches!(gguf_architecture(family), "llama" | "smollm3")
}

/// The rope tensors llama.cpp keeps beside the weights: per-frequency divisors for Llama 3.1
/// long-context scaling (`rope_freqs.weight`), and Phi-3's LongRoPE divisors, one set for
/// contexts up to the original length and one beyond (`rope_factors_short.weight`,
/// `rope_factors_long.weight`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufRopeTensors {
    pub freqs: Option<Vec<f32>>,
    pub short: Option<Vec<f32>>,
    pub long: Option<Vec<f32>>,
}

mod gguf_meta;
mod hf;
mod hf_keys;

#[cfg(test)]
mod tests;
