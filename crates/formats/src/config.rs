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

    fn validate(&self, path: &Path) -> Result<(), FileError> {
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

    /// An HF `config.json` for this architecture (a merged-model export), with the biases
    /// the exported weights carry (`qkv`, `o`, `mlp`), which may exceed the base's (BitFit
    /// with added biases). Fails when the architecture cannot describe them.
    pub fn to_hf_json(
        &self,
        torch_dtype: &str,
        biases: (bool, bool, bool),
    ) -> Result<Value, String> {
        let (qkv, o, mlp) = biases;
        let (arch, model_type, attention_bias, mlp_bias) = match self.family {
            Family::Llama | Family::SmolLM3 | Family::Qwen3 => {
                let name = self.family.as_str();
                if qkv != o {
                    return Err(format!("{name}'s `attention_bias` gives q, k, v and o biases together; this model has them on only some"));
                }
                if mlp && self.family == Family::Qwen3 {
                    return Err("Qwen3 has no MLP biases; these weights have some".into());
                }
                match self.family {
                    Family::Llama => ("LlamaForCausalLM", "llama", qkv, mlp),
                    Family::SmolLM3 => ("SmolLM3ForCausalLM", "smollm3", qkv, mlp),
                    _ => ("Qwen3ForCausalLM", "qwen3", qkv, false),
                }
            }
            Family::Qwen2 => {
                if !qkv || o || mlp {
                    return Err("Qwen2 has biases on q, k and v only; these weights have them elsewhere too".into());
                }
                ("Qwen2ForCausalLM", "qwen2", true, false)
            }
            Family::Mistral => {
                if qkv || o || mlp {
                    return Err("Mistral has no biases; these weights have some".into());
                }
                ("MistralForCausalLM", "mistral", false, false)
            }
            Family::Phi3 => {
                if qkv || o || mlp {
                    return Err("Phi-3 has no biases; these weights have some".into());
                }
                ("Phi3ForCausalLM", "phi3", false, false)
            }
            Family::Gemma2 | Family::Gemma3 => {
                if qkv != o || mlp {
                    return Err("Gemma's `attention_bias` gives q, k, v and o biases together and its MLP has none; these weights differ".into());
                }
                match self.family {
                    Family::Gemma2 => ("Gemma2ForCausalLM", "gemma2", qkv, false),
                    _ => ("Gemma3ForCausalLM", "gemma3_text", qkv, false),
                }
            }
        };
        let rope_scaling = match &self.rope_scaling {
            None => Value::Null,
            Some(RopeScaling::Linear { factor }) => json!({"rope_type": "linear", "factor": factor}),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": *original_max_position_embeddings as u64,
            }),
            Some(RopeScaling::Factors { .. }) => {
                return Err("the rope scaling is stored as per-frequency factors (llama.cpp's rope_freqs), which an HF config cannot state".into())
            }
            Some(RopeScaling::LongRope {
                short_factor,
                long_factor,
                attention_factor,
                ..
            }) => json!({
                "rope_type": "longrope",
                "type": "longrope",
                "short_factor": short_factor,
                "long_factor": long_factor,
                "attention_factor": attention_factor,
            }),
        };
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let mut v = json!({
            "architectures": [arch],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": torch_dtype,
            "use_cache": true,
        });
        if matches!(self.family, Family::Llama | Family::SmolLM3 | Family::Qwen3) {
            v["attention_bias"] = json!(attention_bias);
        }
        if matches!(self.family, Family::Llama | Family::SmolLM3) {
            v["mlp_bias"] = json!(mlp_bias);
        }
        if self.family == Family::SmolLM3 {
            let layers: Vec<u8> = (0..self.num_layers)
                .map(|l| self.layer_uses_rope(l) as u8)
                .collect();
            v["no_rope_layers"] = json!(layers);
        } else if self.rope_layers.iter().any(|&r| !r) {
            return Err(format!(
                "{} cannot leave layers without rope",
                self.family.as_str()
            ));
        }
        let sliding = self.sliding_layers.iter().any(|&s| s);
        let types: Vec<&str> = (0..self.num_layers)
            .map(|l| match self.layer_window(l) {
                Some(_) => "sliding_attention",
                None => "full_attention",
            })
            .collect();
        match self.family {
            Family::Llama if sliding => {
                return Err("Llama has no sliding-window attention".into());
            }
            Family::Gemma2 | Family::Gemma3 => {
                v["sliding_window"] = json!(self.sliding_window.filter(|_| sliding));
                v["layer_types"] = json!(types);
            }
            Family::Phi3 => {
                if sliding && !self.sliding_layers.iter().all(|&s| s) {
                    return Err("Phi-3 slides on every layer or none; this model mixes them".into());
                }
                v["sliding_window"] = json!(self.sliding_window.filter(|_| sliding));
            }
            Family::Llama => {}
            Family::Mistral => {
                if sliding && !self.sliding_layers.iter().all(|&s| s) {
                    return Err(
                        "Mistral slides on every layer or none; this model mixes them".into(),
                    );
                }
                v["sliding_window"] = json!(self.sliding_window.filter(|_| sliding));
            }
            Family::Qwen2 | Family::Qwen3 | Family::SmolLM3 => {
                v["use_sliding_window"] = json!(sliding);
                v["sliding_window"] = json!(self.sliding_window.filter(|_| sliding));
                if self.family != Family::SmolLM3 {
                    // 4.x readers without `layer_types` derive it from max_window_layers
                    let first = self.sliding_layers.iter().position(|&s| s);
                    v["max_window_layers"] = json!(first.unwrap_or(self.num_layers));
                }
                v["layer_types"] = json!(types);
            }
        }
        for (key, p) in &self.dropouts {
            v[key.as_str()] = json!(p);
        }
        Ok(v)
    }

    /// Read an HF `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError::new(path, format!("cannot read: {e}")))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| FileError::new(path, format!("not valid JSON: {e}")))?;
        Self::from_hf_value(&json, path)
    }

    pub fn from_hf_value(json: &Value, path: &Path) -> Result<Self, FileError> {
        let field_err =
            |field: &str, why: &str| FileError::new(path, format!("field `{field}`: {why}"));
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                field_err(
                    "model_type",
                    &format!("missing (expected one of {})", Family::SUPPORTED),
                )
            })?;
        let family = match model_type {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "mistral" => Family::Mistral,
            "smollm3" => Family::SmolLM3,
            "gemma2" => Family::Gemma2,
            "gemma3_text" => Family::Gemma3,
            "phi3" => Family::Phi3,
            other => {
                return Err(field_err(
                    "model_type",
                    &format!(
                        "architecture \"{other}\" is not supported (supported: {})",
                        Family::SUPPORTED
                    ),
                ))
            }
        };
        let uint = |field: &str| -> Result<Option<usize>, FileError> {
            match json.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                    field_err(field, &format!("expected a non-negative integer, got {v}"))
                }),
            }
        };
        let req = |field: &str| -> Result<usize, FileError> {
            uint(field)?.ok_or_else(|| field_err(field, "missing"))
        };
        let float = |field: &str, default: f64| -> Result<f64, FileError> {
            match json.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| field_err(field, &format!("expected a number, got {v}"))),
            }
        };
        let boolean = |field: &str, default: bool| -> Result<bool, FileError> {
            match json.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| field_err(field, &format!("expected true or false, got {v}"))),
            }
        };
        let gemma = family.is_gemma();
        // Gemma's classes read `hidden_activation` (GeGLU, tanh approximation), the others
        // `hidden_act` (SwiGLU)
        let (act_key, act_want) = match gemma {
            true if json.get("hidden_activation").is_some() => {
                ("hidden_activation", "gelu_pytorch_tanh")
            }
            true => ("hidden_act", "gelu_pytorch_tanh"),
            false => ("hidden_act", "silu"),
        };
        if let Some(act) = json.get(act_key).filter(|v| !v.is_null()) {
            if act.as_str() != Some(act_want) {
                return Err(field_err(
                    act_key,
                    &format!("{act} is not supported (only \"{act_want}\")"),
                ));
            }
        }
        let activation = if gemma {
            Activation::GeluTanh
        } else {
            Activation::Silu
        };
        if gemma && boolean("use_bidirectional_attention", false)? {
            return Err(field_err(
                "use_bidirectional_attention",
                "true: bidirectional (embedding-model) attention is not supported",
            ));
        }
        // a number, null (off) or absent (the class default)
        let optional = |field: &str, default: Option<f64>| -> Result<Option<f64>, FileError> {
            match json.get(field) {
                None => Ok(default),
                Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .map(Some)
                    .ok_or_else(|| {
                        field_err(
                            field,
                            &format!("expected a positive number or null, got {v}"),
                        )
                    }),
            }
        };
        let hidden_size = req("hidden_size")?;
        let num_heads = req("num_attention_heads")?;
        if num_heads == 0 {
            return Err(field_err(
                "num_attention_heads",
                "must be a positive integer, got 0",
            ));
        }
        let head_dim = match uint("head_dim")? {
            Some(d) => d,
            // the class defaults of Qwen3 and Gemma, independent of the hidden size
            None if family == Family::Qwen3 => 128,
            None if gemma => 256,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(field_err(
                        "num_attention_heads",
                        &format!("{num_heads} does not divide hidden_size = {hidden_size}"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        let attention_bias = boolean("attention_bias", false)?;
        if family == Family::Mistral && attention_bias {
            return Err(field_err(
                "attention_bias",
                "true: Mistral has no attention biases",
            ));
        }
        let phi3 = family == Family::Phi3;
        if !gemma && !phi3 {
            refuse_unsupported_math(json, &field_err)?;
        } else if gemma {
            refuse_partial_rotary(json, "partial_rotary_factor", &field_err)?;
        } else {
            refuse_softcapping(json, &field_err)?;
        }
        let num_layers = req("num_hidden_layers")?;
        if num_layers > MAX_LAYERS {
            return Err(field_err(
                "num_hidden_layers",
                &format!("{num_layers} is more than {MAX_LAYERS} layers"),
            ));
        }
        let rope_layers = rope_layers(json, family, num_layers, &field_err)?;
        let (sliding_window, sliding_layers) =
            sliding_layers(json, family, num_layers, &rope_layers, &field_err)?;
        let (rope_theta, rope_scaling, local_rope_theta) = if family == Family::Gemma3 {
            gemma3_rope(json, &field_err)?
        } else if phi3 {
            let (theta, scaling) = phi3_rope(json, &field_err)?;
            (theta, scaling, None)
        } else {
            let (theta, scaling) = rope_settings(json, &field_err)?;
            (theta, scaling, None)
        };
        let rotary_dim = match phi3 {
            true => phi3_rotary_dim(json, head_dim, &field_err)?,
            false => head_dim,
        };
        let eos_token_ids = match json.get("eos_token_id") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|n| n as u32))
                .collect(),
            Some(v) => vec![v.as_u64().ok_or_else(|| {
                field_err("eos_token_id", &format!("expected an integer, got {v}"))
            })? as u32],
        };
        let cfg = ModelConfig {
            family,
            vocab_size: req("vocab_size")?,
            hidden_size,
            intermediate_size: req("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads: uint("num_key_value_heads")?.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: float("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            max_position_embeddings: uint("max_position_embeddings")?.unwrap_or(2048),
            // SmolLM3's and Gemma's classes tie by default, the others do not
            tie_word_embeddings: boolean(
                "tie_word_embeddings",
                family == Family::SmolLM3 || gemma,
            )?,
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family != Family::Qwen2 && attention_bias,
            mlp_bias: matches!(family, Family::Llama | Family::SmolLM3)
                && boolean("mlp_bias", false)?,
            qk_norm: matches!(family, Family::Qwen3 | Family::Gemma3),
            rope_layers,
            sliding_window,
            sliding_layers,
            dropouts: {
                let keys: &[&str] = match phi3 {
                    true => &["attention_dropout", "resid_pdrop", "embd_pdrop"],
                    false => &["attention_dropout"],
                };
                let mut d = vec![];
                for k in keys {
                    let p = float(k, 0.0)?;
                    if p != 0.0 {
                        d.push((k.to_string(), p));
                    }
                }
                d
            },
            activation,
            unit_offset_norms: gemma,
            scale_embeddings: gemma,
            sandwich_norms: gemma,
            query_pre_attn_scalar: match gemma {
                true => Some(
                    optional("query_pre_attn_scalar", Some(256.0))?.ok_or_else(|| {
                        field_err(
                            "query_pre_attn_scalar",
                            "must be a positive number, got null",
                        )
                    })?,
                ),
                false => None,
            },
            attn_softcap: match family {
                Family::Gemma2 => optional("attn_logit_softcapping", Some(50.0))?,
                // transformers' Gemma 3 class reads the key but never applies it: a config that
                // sets it means something no implementation agrees on
                Family::Gemma3 => match optional("attn_logit_softcapping", None)? {
                    Some(c) => {
                        return Err(field_err(
                            "attn_logit_softcapping",
                            &format!("{c}: Gemma 3 has no score soft-capping (transformers ignores this key)"),
                        ))
                    }
                    None => None,
                },
                _ => None,
            },
            final_softcap: match family {
                Family::Gemma2 => optional("final_logit_softcapping", Some(30.0))?,
                Family::Gemma3 => optional("final_logit_softcapping", None)?,
                _ => None,
            },
            local_rope_theta,
            rotary_dim,
            fused_projections: family == Family::Phi3,
            bos_token_id: uint("bos_token_id")?.map(|n| n as u32),
            eos_token_ids,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Build the config from GGUF metadata. `has_tensor` answers whether a tensor of that
    /// (GGUF) name exists, which is how GGUF records tied embeddings and biases.
    pub fn from_gguf(
        path: &Path,
        content: &gguf_file::Content,
        rope: crate::weights::GgufRopeTensors,
    ) -> Result<Self, FileError> {
        let md = &content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| FileError::new(path, "metadata key `general.architecture` is missing"))?
            .clone();
        let family = match arch.as_str() {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "smollm3" => Family::SmolLM3,
            "gemma2" => Family::Gemma2,
            "gemma3" => Family::Gemma3,
            "phi3" => Family::Phi3,
            other => {
                return Err(FileError::new(
                    path,
                    format!("metadata key `general.architecture`: GGUF architecture \"{other}\" is not supported (supported: llama, mistral, qwen2, qwen3, smollm3, gemma2, gemma3, phi3)"),
                ))
            }
        };
        let gemma = family.is_gemma();
        let key = |k: &str| format!("{arch}.{k}");
        let get_u = |k: &str| -> Result<Option<usize>, FileError> {
            match md.get(&key(k)) {
                None => Ok(None),
                Some(v) => v
                    .to_u64()
                    .map(|n| Some(n as usize))
                    .or_else(|_| v.to_u32().map(|n| Some(n as usize)))
                    .or_else(|_| v.to_i32().map(|n| Some(n.max(0) as usize)))
                    .map_err(|_| {
                        FileError::new(path, format!("metadata key `{}` is not an integer", key(k)))
                    }),
            }
        };
        let req_u = |k: &str| -> Result<usize, FileError> {
            get_u(k)?.ok_or_else(|| {
                FileError::new(path, format!("metadata key `{}` is missing", key(k)))
            })
        };
        let get_f = |k: &str| -> Result<Option<f64>, FileError> {
            match md.get(&key(k)) {
                None => Ok(None),
                Some(v) => v
                    .to_f32()
                    .map(|x| Some(x as f64))
                    .or_else(|_| v.to_f64().map(Some))
                    .map_err(|_| {
                        FileError::new(path, format!("metadata key `{}` is not a number", key(k)))
                    }),
            }
        };
        let hidden_size = req_u("embedding_length")?;
        let num_heads = req_u("attention.head_count")?;
        if num_heads == 0 {
            return Err(FileError::new(
                path,
                format!("metadata key `{}` is 0", key("attention.head_count")),
            ));
        }
        let head_dim = match get_u("attention.key_length")? {
            Some(d) => d,
            None => hidden_size / num_heads,
        };
        let tokens_len = md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.len());
        let vocab_size = match get_u("vocab_size")? {
            Some(v) => v,
            None => tokens_len
                .or_else(|| {
                    content
                        .tensor_infos
                        .get("token_embd.weight")
                        .map(|t| t.shape.dims()[0])
                })
                .ok_or_else(|| {
                    FileError::new(
                        path,
                        format!("cannot tell the vocabulary size: no `{}`, `tokenizer.ggml.tokens` or `token_embd.weight`", key("vocab_size")),
                    )
                })?,
        };
        let has = |name: &str| content.tensor_infos.contains_key(name);
        let md_u32 = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let linear_factor = match md
            .get(&key("rope.scaling.type"))
            .and_then(|v| v.to_string().ok())
        {
            Some(t) if t == "linear" => get_f("rope.scaling.factor")?,
            Some(t) if t != "none" => {
                return Err(FileError::new(
                    path,
                    format!(
                        "metadata key `{}`: rope scaling type \"{t}\" is not supported",
                        key("rope.scaling.type")
                    ),
                ))
            }
            _ => None,
        };
        let phi3 = family == Family::Phi3;
        // keys that change the math and that these families do not implement; Phi-3 rotates
        // a leading part of each head (Phi-4-mini three quarters)
        let rotary_dim = get_u("rope.dimension_count")?.unwrap_or(head_dim);
        if phi3 && (rotary_dim == 0 || rotary_dim > head_dim || rotary_dim % 2 == 1) {
            return Err(FileError::new(
                path,
                format!(
                    "metadata key `{}` = {rotary_dim}: not an even number of dimensions up to \
                     the head size {head_dim}",
                    key("rope.dimension_count")
                ),
            ));
        }
        if !phi3 {
            let dims = rotary_dim;
            if dims != head_dim {
                return Err(FileError::new(
                    path,
                    format!(
                        "metadata key `{}` = {dims}: rotating part of each head (of {head_dim}) \
                         is not supported",
                        key("rope.dimension_count")
                    ),
                ));
            }
        }
        let num_layers = req_u("block_count")?;
        if num_layers > MAX_LAYERS {
            return Err(FileError::new(
                path,
                format!(
                    "metadata key `{}` = {num_layers}: more than {MAX_LAYERS} layers",
                    key("block_count")
                ),
            ));
        }
        let md_err =
            |k: &str, why: String| FileError::new(path, format!("metadata key `{}`{why}", key(k)));
        if !gemma {
            for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
                if let Some(v) = get_f(k)?.filter(|&v| v != 0.0) {
                    return Err(md_err(
                        k,
                        format!(" = {v}: logit soft-capping is not supported"),
                    ));
                }
            }
        }
        // llama.cpp's phi3 reads the window and then switches it off (every layer attends to
        // the whole context), so a Phi-3 GGUF computes without one
        let window = get_u("attention.sliding_window")?.filter(|&w| w != 0 && !phi3);
        let sliding_layers = match (window, gemma) {
            (Some(w), false) => {
                return Err(md_err(
                    "attention.sliding_window",
                    format!(" = {w}: sliding-window attention is not supported"),
                ))
            }
            (None, _) => vec![],
            // llama.cpp: layer i slides when i % pattern < pattern - 1 (Gemma 2: every other
            // layer, Gemma 3: five of every six), the pattern overridable by a key
            (Some(_), true) => {
                let pattern = match md.get(&key("attention.sliding_window_pattern")) {
                    None => {
                        if family == Family::Gemma2 {
                            2
                        } else {
                            6
                        }
                    }
                    Some(v) => v.to_u32().ok().filter(|&p| p > 0).ok_or_else(|| {
                        md_err(
                            "attention.sliding_window_pattern",
                            " is not a positive integer (a per-layer list is not supported)".into(),
                        )
                    })? as usize,
                };
                (0..num_layers).map(|l| l % pattern < pattern - 1).collect()
            }
        };
        if family == Family::Gemma3 && window.is_none() {
            // llama.cpp's Gemma 3 graph without a window soft-caps the logits unasked
            return Err(md_err(
                "attention.sliding_window",
                " is missing: a Gemma 3 without sliding layers is not supported".into(),
            ));
        }
        // llama.cpp scales Gemma's queries by its own rule (it ignores `attention.scale` for
        // these architectures, so a file stating another scale is refused)
        let query_pre_attn_scalar = if gemma {
            let rule = gemma_query_scalar(family, num_layers, hidden_size, num_heads, head_dim);
            if let Some(s) = get_f("attention.scale")? {
                if (s * rule.sqrt() - 1.0).abs() > 1e-4 {
                    return Err(md_err(
                        "attention.scale",
                        format!(" = {s}: llama.cpp scales this model's queries by 1/√{rule} and ignores the key"),
                    ));
                }
            }
            Some(rule)
        } else {
            None
        };
        let context_length = get_u("context_length")?.unwrap_or(2048);
        let attn_factor = get_f("rope.scaling.attn_factor")?;
        if let Some(a) = attn_factor.filter(|&a| a != 1.0 && !phi3) {
            return Err(md_err(
                "rope.scaling.attn_factor",
                format!(" = {a}: scaling cos and sin is supported only for phi3"),
            ));
        }
        let long_rope = match (rope.short, rope.long) {
            (None, None) => None,
            (Some(short), Some(long)) if phi3 => {
                let half = rotary_dim / 2;
                if short.len() != half || long.len() != half {
                    return Err(FileError::new(
                        path,
                        format!(
                            "tensors `rope_factors_short.weight` / `rope_factors_long.weight` \
                             hold {} / {} factors, not {half} (half the rotated dimensions)",
                            short.len(),
                            long.len()
                        ),
                    ));
                }
                let original =
                    get_u("rope.scaling.original_context_length")?.unwrap_or(context_length) as f64;
                Some(RopeScaling::LongRope {
                    short_factor: short.iter().map(|&x| x as f64).collect(),
                    long_factor: long.iter().map(|&x| x as f64).collect(),
                    original_max_position_embeddings: original,
                    attention_factor: attn_factor.unwrap_or(1.0),
                })
            }
            (short, _) => {
                let which = if short.is_some() { "short" } else { "long" };
                return Err(FileError::new(
                    path,
                    format!(
                        "tensor `rope_factors_{which}.weight`: LongRoPE factors need both sets, \
                         in a phi3 model"
                    ),
                ));
            }
        };
        if phi3 && !has("blk.0.attn_qkv.weight") {
            return Err(FileError::new(
                path,
                "tensor `blk.0.attn_qkv.weight` is missing: a phi3 model with separate q, k and v \
                 is not supported",
            ));
        }
        if phi3 && (has("blk.0.attn_qkv.bias") || has("blk.0.ffn_up.bias")) {
            return Err(FileError::new(
                path,
                "tensor `blk.0.attn_qkv.bias`: Phi-3 has no biases; this file has some",
            ));
        }
        let rope_scaling = match (rope.freqs, linear_factor, long_rope) {
            (_, _, Some(l)) => Some(l),
            (Some(factors), _, None) => Some(RopeScaling::Factors { factors }),
            (None, Some(factor), None) => Some(RopeScaling::Linear { factor }),
            (None, None, None) => None,
        };
        let cfg = ModelConfig {
            family,
            vocab_size,
            hidden_size,
            intermediate_size: req_u("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads: get_u("attention.head_count_kv")?.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: get_f("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
            rope_theta: get_f("rope.freq_base")?.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: context_length,
            tie_word_embeddings: !has("output.weight"),
            qkv_bias: has("blk.0.attn_q.bias"),
            o_bias: has("blk.0.attn_output.bias"),
            mlp_bias: has("blk.0.ffn_up.bias"),
            qk_norm: has("blk.0.attn_q_norm.weight"),
            // llama.cpp's smollm3 leaves every fourth layer without rope, a fixed pattern
            rope_layers: if family == Family::SmolLM3 {
                (0..num_layers).map(|l| (l + 1) % 4 != 0).collect()
            } else {
                vec![]
            },
            sliding_window: window.filter(|_| !sliding_layers.is_empty()),
            sliding_layers,
            dropouts: vec![],
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            unit_offset_norms: gemma,
            scale_embeddings: gemma,
            sandwich_norms: gemma,
            query_pre_attn_scalar,
            // llama.cpp's Gemma 2 always soft-caps (50 and 30 unless the file says)
            attn_softcap: match family {
                Family::Gemma2 => Some(get_f("attn_logit_softcapping")?.unwrap_or(50.0)),
                _ => None,
            },
            final_softcap: match family {
                Family::Gemma2 => Some(get_f("final_logit_softcapping")?.unwrap_or(30.0)),
                _ => None,
            },
            local_rope_theta: match family {
                Family::Gemma3 => Some(get_f("rope.freq_base_swa")?.unwrap_or(10_000.0)),
                _ => None,
            },
            rotary_dim,
            fused_projections: phi3,
            bos_token_id: md_u32("tokenizer.ggml.bos_token_id"),
            eos_token_ids: md_u32("tokenizer.ggml.eos_token_id").into_iter().collect(),
        };
        cfg.validate(path)?;
        Ok(cfg)
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

type FieldErr<'a> = dyn Fn(&str, &str) -> FileError + 'a;

/// `obj[key]` as a number; `None` when absent or null. `field` names it in the error.
fn optional_number(
    obj: &Value,
    key: &str,
    field: &str,
    field_err: &FieldErr,
) -> Result<Option<f64>, FileError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| field_err(field, &format!("expected a number, got {v}"))),
    }
}

/// Refuse a `partial_rotary_factor` other than 1 in `obj` (rotating only part of each head).
fn refuse_partial_rotary(obj: &Value, field: &str, field_err: &FieldErr) -> Result<(), FileError> {
    match optional_number(obj, "partial_rotary_factor", field, field_err)? {
        Some(p) if p != 1.0 => Err(field_err(
            field,
            &format!("{p}: rotating part of each head is not supported (only 1.0)"),
        )),
        _ => Ok(()),
    }
}

/// Rotary settings from either generation of `config.json`: transformers 4 keeps
/// `rope_theta` and `rope_scaling` at the top level, transformers 5 one `rope_parameters`
/// object (`{"rope_type", "rope_theta", ...scaling keys}`). Where both are present they must
/// agree; a per-layer-type `rope_parameters` (different rope for sliding and full attention
/// layers) is refused by name, since these families use one rope for every layer.
fn rope_settings(
    json: &Value,
    field_err: &FieldErr,
) -> Result<(f64, Option<RopeScaling>), FileError> {
    let top_theta = optional_number(json, "rope_theta", "rope_theta", field_err)?;
    let old_scaling = match json.get("rope_scaling") {
        None | Some(Value::Null) => None,
        Some(v) => Some(rope_scaling_from(v, "rope_scaling", field_err)?),
    };
    let params = match json.get("rope_parameters") {
        None | Some(Value::Null) => {
            return Ok((top_theta.unwrap_or(10_000.0), old_scaling.flatten()));
        }
        Some(v) => v,
    };
    if let Some(m) = params.as_object() {
        if !m.is_empty() && m.values().all(Value::is_object) {
            let kinds: Vec<&str> = m.keys().map(String::as_str).collect();
            return Err(field_err(
                "rope_parameters",
                &format!(
                    "one rope per layer type ({}) is not supported: every layer of these \
                     architectures uses the same rope",
                    kinds.join(", ")
                ),
            ));
        }
    }
    let scaling = rope_scaling_from(params, "rope_parameters", field_err)?;
    let theta = optional_number(
        params,
        "rope_theta",
        "rope_parameters.rope_theta",
        field_err,
    )?;
    if let (Some(a), Some(b)) = (top_theta, theta) {
        if a != b {
            return Err(field_err(
                "rope_parameters.rope_theta",
                &format!("{b} disagrees with the top-level rope_theta = {a}"),
            ));
        }
    }
    if let Some(old) = old_scaling {
        if old != scaling {
            return Err(field_err(
                "rope_parameters",
                "disagrees with the top-level rope_scaling; a config should state its rope once",
            ));
        }
    }
    Ok((theta.or(top_theta).unwrap_or(10_000.0), scaling))
}

/// Gemma 3's two ropes: the full-attention layers' theta and scaling, and the sliding
/// layers' theta (always unscaled). transformers 4 writes `rope_theta`, `rope_scaling` (for
/// the full layers) and `rope_local_base_freq`; transformers 5 one `rope_parameters` object
/// per layer type. Where both forms are present they must agree.
fn gemma3_rope(
    json: &Value,
    field_err: &FieldErr,
) -> Result<(f64, Option<RopeScaling>, Option<f64>), FileError> {
    let top_theta = optional_number(json, "rope_theta", "rope_theta", field_err)?;
    let top_local = optional_number(
        json,
        "rope_local_base_freq",
        "rope_local_base_freq",
        field_err,
    )?;
    let old_scaling = match json.get("rope_scaling") {
        None | Some(Value::Null) => None,
        Some(v) => rope_scaling_from(v, "rope_scaling", field_err)?,
    };
    let (mut theta, mut scaling, mut local) = (
        top_theta.unwrap_or(1_000_000.0),
        old_scaling.clone(),
        top_local.unwrap_or(10_000.0),
    );
    if let Some(params) = json.get("rope_parameters").filter(|v| !v.is_null()) {
        type Part = Option<(Option<f64>, Option<RopeScaling>)>;
        let part = |kind: &str| -> Result<Part, FileError> {
            let at = format!("rope_parameters.{kind}");
            match params.get(kind) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => Ok(Some((
                    optional_number(v, "rope_theta", &format!("{at}.rope_theta"), field_err)?,
                    rope_scaling_from(v, &at, field_err)?,
                ))),
            }
        };
        if !params.is_object() {
            return Err(field_err(
                "rope_parameters",
                &format!("expected an object, got {params}"),
            ));
        }
        if let Some((t, sc)) = part("full_attention")? {
            if let (Some(a), Some(b)) = (top_theta, t) {
                if a != b {
                    return Err(field_err(
                        "rope_parameters.full_attention.rope_theta",
                        &format!("{b} disagrees with the top-level rope_theta = {a}"),
                    ));
                }
            }
            theta = t.unwrap_or(theta);
            scaling = sc;
        }
        if let Some((t, sc)) = part("sliding_attention")? {
            if let Some(sc) = sc {
                return Err(field_err(
                    "rope_parameters.sliding_attention.rope_type",
                    &format!("{sc:?}: scaling the sliding layers' rope is not supported"),
                ));
            }
            if let (Some(a), Some(b)) = (top_local, t) {
                if a != b {
                    return Err(field_err(
                        "rope_parameters.sliding_attention.rope_theta",
                        &format!("{b} disagrees with rope_local_base_freq = {a}"),
                    ));
                }
            }
            local = t.unwrap_or(local);
        }
    }
    Ok((theta, scaling, Some(local)))
}

/// The scaling a `rope_scaling` (4.x) or `rope_parameters` (5.x) object describes; `None`
/// for `default`. Keys that change the rope but are not implemented are refused by name.
fn rope_scaling_from(
    v: &Value,
    at: &str,
    field_err: &FieldErr,
) -> Result<Option<RopeScaling>, FileError> {
    if !v.is_object() {
        return Err(field_err(at, &format!("expected an object, got {v}")));
    }
    refuse_partial_rotary(v, &format!("{at}.partial_rotary_factor"), field_err)?;
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64, FileError> {
        v.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| field_err(&format!("{at}.{k}"), "missing or not a number"))
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => {
            return Err(field_err(
                &format!("{at}.rope_type"),
                &format!("\"{other}\" is not supported (supported: default, linear, llama3)"),
            ))
        }
    })
}

/// Keys that change what the model computes and that these families do not implement:
/// refused by name with their value rather than ignored (a silent misread trains the wrong
/// function).
fn refuse_unsupported_math(json: &Value, field_err: &FieldErr) -> Result<(), FileError> {
    refuse_partial_rotary(json, "partial_rotary_factor", field_err)?;
    refuse_softcapping(json, field_err)
}

/// Logit soft-capping, which only the Gemma families implement.
fn refuse_softcapping(json: &Value, field_err: &FieldErr) -> Result<(), FileError> {
    for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if let Some(v) = json.get(k).filter(|v| !v.is_null()) {
            return Err(field_err(
                k,
                &format!("{v}: logit soft-capping is not supported"),
            ));
        }
    }
    Ok(())
}

/// Phi-3's rope: `rope_theta` and a LongRoPE `rope_scaling` (transformers 4; `su` and `yarn`
/// are its old names for it, as transformers' Phi-3 class reads them) or one
/// `rope_parameters` object (transformers 5). `original_max_position_embeddings` sits at the
/// top level in the 4.x form, inside the rope object in 5.x.
fn phi3_rope(json: &Value, field_err: &FieldErr) -> Result<(f64, Option<RopeScaling>), FileError> {
    let top_theta = optional_number(json, "rope_theta", "rope_theta", field_err)?;
    let set = |k: &str| json.get(k).filter(|v| !v.is_null());
    let (obj, at) = match (set("rope_parameters"), set("rope_scaling")) {
        (Some(p), Some(s)) => {
            // both forms: they must state the same rope
            let same = |k: &str| p.get(k) == s.get(k);
            let kind = |v: &Value| {
                v.get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(Value::as_str)
                    .map(|t| {
                        if matches!(t, "su" | "yarn") {
                            "longrope"
                        } else {
                            t
                        }
                    })
                    .unwrap_or("default")
                    .to_string()
            };
            if kind(p) != kind(s) || !same("short_factor") || !same("long_factor") {
                return Err(field_err(
                    "rope_scaling",
                    "disagrees with rope_parameters; a config should state its rope once",
                ));
            }
            (Some(p), "rope_parameters")
        }
        (Some(p), None) => (Some(p), "rope_parameters"),
        (None, Some(s)) => (Some(s), "rope_scaling"),
        (None, None) => (None, ""),
    };
    let Some(obj) = obj else {
        return Ok((top_theta.unwrap_or(10_000.0), None));
    };
    if !obj.is_object() {
        return Err(field_err(at, &format!("expected an object, got {obj}")));
    }
    let theta = optional_number(obj, "rope_theta", &format!("{at}.rope_theta"), field_err)?;
    if let (Some(a), Some(b)) = (top_theta, theta) {
        if a != b {
            return Err(field_err(
                &format!("{at}.rope_theta"),
                &format!("{b} disagrees with the top-level rope_theta = {a}"),
            ));
        }
    }
    let theta = theta.or(top_theta).unwrap_or(10_000.0);
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok((theta, None)),
        "longrope" | "su" | "yarn" => {
            let list = |k: &str| -> Result<Vec<f64>, FileError> {
                obj.get(k)
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                    .filter(|v| v.iter().all(|x| x.is_finite() && *x > 0.0))
                    .ok_or_else(|| {
                        field_err(
                            &format!("{at}.{k}"),
                            "missing or not a list of positive numbers",
                        )
                    })
            };
            let (short_factor, long_factor) = (list("short_factor")?, list("long_factor")?);
            let original = optional_number(
                obj,
                "original_max_position_embeddings",
                &format!("{at}.original_max_position_embeddings"),
                field_err,
            )?
            .or(optional_number(
                json,
                "original_max_position_embeddings",
                "original_max_position_embeddings",
                field_err,
            )?)
            .unwrap_or(4096.0);
            let max = optional_number(
                json,
                "max_position_embeddings",
                "max_position_embeddings",
                field_err,
            )?
            .unwrap_or(4096.0);
            let factor = optional_number(obj, "factor", &format!("{at}.factor"), field_err)?
                .unwrap_or(max / original);
            let attention_factor = match optional_number(
                obj,
                "attention_factor",
                &format!("{at}.attention_factor"),
                field_err,
            )? {
                Some(a) => a,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / original.ln()).sqrt(),
            };
            if !(original.is_finite() && original > 1.0) {
                return Err(field_err(
                    "original_max_position_embeddings",
                    &format!("{original} must be a number > 1"),
                ));
            }
            Ok((
                theta,
                Some(RopeScaling::LongRope {
                    short_factor,
                    long_factor,
                    original_max_position_embeddings: original,
                    attention_factor,
                }),
            ))
        }
        other => Err(field_err(
            &format!("{at}.rope_type"),
            &format!("\"{other}\" is not supported for phi3 (supported: default, longrope)"),
        )),
    }
}

/// How many leading dimensions of each head Phi-3 rotates: `partial_rotary_factor` (top level
/// in transformers 4, in `rope_parameters` in 5) times `head_dim`, rounded down as
/// transformers does.
fn phi3_rotary_dim(
    json: &Value,
    head_dim: usize,
    field_err: &FieldErr,
) -> Result<usize, FileError> {
    let inner = match json.get("rope_parameters").filter(|v| v.is_object()) {
        Some(p) => optional_number(
            p,
            "partial_rotary_factor",
            "rope_parameters.partial_rotary_factor",
            field_err,
        )?,
        None => None,
    };
    let top = optional_number(
        json,
        "partial_rotary_factor",
        "partial_rotary_factor",
        field_err,
    )?;
    if let (Some(a), Some(b)) = (top, inner) {
        if a != b {
            return Err(field_err(
                "partial_rotary_factor",
                &format!("{a} disagrees with rope_parameters.partial_rotary_factor = {b}"),
            ));
        }
    }
    let factor = inner.or(top).unwrap_or(1.0);
    let dim = (head_dim as f64 * factor) as usize;
    if !(factor > 0.0 && factor <= 1.0) || dim == 0 || dim % 2 == 1 {
        return Err(field_err(
            "partial_rotary_factor",
            &format!("{factor} rotates {dim} of {head_dim} dimensions; it must be an even, positive number"),
        ));
    }
    Ok(dim)
}

/// SmolLM3's `no_rope_layers` (1 = the layer rotates, 0 = it does not), or the pattern its
/// `no_rope_layer_interval` implies (every n-th layer without rope); empty (all rotate) for
/// the other families.
fn rope_layers(
    json: &Value,
    family: Family,
    num_layers: usize,
    field_err: &FieldErr,
) -> Result<Vec<bool>, FileError> {
    if family != Family::SmolLM3 {
        // a list with a layer left unrotated belongs to another class: refused, not ignored
        if let Some(v) = json.get("no_rope_layers").filter(|v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() != Some(1)))
        }) {
            return Err(field_err(
                "no_rope_layers",
                &format!("{v}: {} rotates every layer", family.as_str()),
            ));
        }
        return Ok(vec![]);
    }
    match json.get("no_rope_layers") {
        None | Some(Value::Null) => {
            let every = match json.get("no_rope_layer_interval") {
                None | Some(Value::Null) => 4,
                Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                    field_err(
                        "no_rope_layer_interval",
                        &format!("expected a positive integer, got {v}"),
                    )
                })? as usize,
            };
            Ok((0..num_layers).map(|l| (l + 1) % every != 0).collect())
        }
        Some(Value::Array(a)) if a.len() != num_layers => Err(field_err(
            "no_rope_layers",
            &format!("has {} entries, num_hidden_layers = {num_layers}", a.len()),
        )),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_u64() {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(field_err(
                    &format!("no_rope_layers[{i}]"),
                    &format!("expected 0 or 1, got {v}"),
                )),
            })
            .collect(),
        Some(v) => Err(field_err(
            "no_rope_layers",
            &format!("expected a list of 0 and 1, got {v}"),
        )),
    }
}

/// Which layers use sliding-window attention, and the window, as each family's
/// transformers class decides it: an explicit `layer_types` list where the family reads one,
/// else Mistral slides on every layer when `sliding_window` is set (4096 when absent, its
/// class default), Qwen2/Qwen3 with `use_sliding_window` on the layers from
/// `max_window_layers` on, SmolLM3 with `use_sliding_window` on the layers without rope.
fn sliding_layers(
    json: &Value,
    family: Family,
    num_layers: usize,
    rope_layers: &[bool],
    field_err: &FieldErr,
) -> Result<(Option<usize>, Vec<bool>), FileError> {
    let set = |k: &str| json.get(k).filter(|v| !v.is_null());
    let window = match set("sliding_window") {
        None if matches!(family, Family::Mistral | Family::Gemma2 | Family::Gemma3)
            && json.get("sliding_window").is_none() =>
        {
            Some(4096)
        }
        None => None,
        Some(v) => Some(v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
            field_err(
                "sliding_window",
                &format!("expected a positive integer or null, got {v}"),
            )
        })? as usize),
    };
    let use_sliding = match set("use_sliding_window") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            field_err(
                "use_sliding_window",
                &format!("expected true or false, got {v}"),
            )
        })?,
    };
    let listed: Option<Vec<bool>> = match set("layer_types") {
        None => None,
        Some(Value::Array(types)) => Some(
            types
                .iter()
                .enumerate()
                .map(|(i, t)| match t.as_str() {
                    Some("full_attention") => Ok(false),
                    Some("sliding_attention") => Ok(true),
                    _ => Err(field_err(
                        &format!("layer_types[{i}]"),
                        &format!(
                            "{t} is not supported (supported: \"full_attention\", \"sliding_attention\")"
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(v) => {
            return Err(field_err(
                "layer_types",
                &format!("expected a list, got {v}"),
            ))
        }
    };
    if let Some(l) = listed.as_ref().filter(|l| l.len() != num_layers) {
        return Err(field_err(
            "layer_types",
            &format!("has {} entries, num_hidden_layers = {num_layers}", l.len()),
        ));
    }
    let derived: Vec<bool> = match family {
        Family::Llama => vec![false; num_layers],
        Family::Mistral | Family::Phi3 => vec![window.is_some(); num_layers],
        Family::Qwen2 | Family::Qwen3 => {
            let from = match set("max_window_layers") {
                None => 28,
                Some(v) => v.as_u64().ok_or_else(|| {
                    field_err(
                        "max_window_layers",
                        &format!("expected a non-negative integer, got {v}"),
                    )
                })? as usize,
            };
            (0..num_layers)
                .map(|l| use_sliding && window.is_some() && l >= from)
                .collect()
        }
        Family::SmolLM3 => (0..num_layers)
            .map(|l| {
                use_sliding && window.is_some() && !rope_layers.get(l).copied().unwrap_or(true)
            })
            .collect(),
        // every layer but each `pattern`-th slides (Gemma 2: every other one)
        Family::Gemma2 | Family::Gemma3 => {
            let pattern = match (family, set("sliding_window_pattern")) {
                (Family::Gemma2, _) => 2,
                (_, None) => 6,
                (_, Some(v)) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                    field_err(
                        "sliding_window_pattern",
                        &format!("expected a positive integer, got {v}"),
                    )
                })? as usize,
            };
            (0..num_layers)
                .map(|l| window.is_some() && (l + 1) % pattern != 0)
                .collect()
        }
    };
    let layers = match (family, listed) {
        // Llama's and Mistral's classes ignore `layer_types`: a list that disagrees with what
        // they compute is a folder meant for another class
        (Family::Llama | Family::Mistral | Family::Phi3, Some(l)) if l != derived => {
            let i = l
                .iter()
                .zip(&derived)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(field_err(
                &format!("layer_types[{i}]"),
                &format!(
                    "\"{}\" is not what {} computes for this layer",
                    if l[i] {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    },
                    family.as_str()
                ),
            ));
        }
        (Family::Gemma2 | Family::Gemma3, Some(l)) => {
            if l.iter().any(|&s| s) && window.is_none() {
                let i = l.iter().position(|&s| s).unwrap_or(0);
                return Err(field_err(
                    &format!("layer_types[{i}]"),
                    "\"sliding_attention\" but sliding_window is null",
                ));
            }
            l
        }
        (Family::Qwen2 | Family::Qwen3 | Family::SmolLM3, Some(l)) => {
            // these classes drop the window unless `use_sliding_window` is on
            if l.iter().any(|&s| s) && !(use_sliding && window.is_some()) {
                let i = l.iter().position(|&s| s).unwrap_or(0);
                return Err(field_err(
                    &format!("layer_types[{i}]"),
                    "\"sliding_attention\" but use_sliding_window is off or sliding_window is null",
                ));
            }
            l
        }
        _ => derived,
    };
    if layers.iter().any(|&s| s) {
        Ok((window, layers))
    } else {
        Ok((None, vec![]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> Value {
        json!({
            "model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
            "eos_token_id": [1, 2], "hidden_act": "silu"
        })
    }

    #[test]
    fn reads_a_llama_config_with_defaults() {
        let c = ModelConfig::from_hf_value(&llama(), Path::new("c.json")).unwrap();
        assert_eq!(c.family, Family::Llama);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        assert!(!c.qkv_bias);
        // embed 6400 + per layer (64*64*2 + 64*32*2 + 3*64*128 + 128) + final norm 64
        assert_eq!(
            c.parameter_count(),
            6400 + 2 * (8192 + 4096 + 24576 + 128) + 64
        );
    }

    #[test]
    fn qwen2_has_qkv_bias_and_llama3_scaling_parses() {
        let mut v = llama();
        v["model_type"] = json!("qwen2");
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = ModelConfig::from_hf_value(&v, Path::new("c.json")).unwrap();
        assert!(c.qkv_bias && !c.o_bias);
        assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3 { .. })));
    }

    #[test]
    fn both_config_generations_give_the_same_rope() {
        // transformers 4.x: top-level rope_theta / rope_scaling
        let mut old = llama();
        old["rope_theta"] = json!(500000.0);
        old["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192});
        // transformers 5.x: everything under rope_parameters, theta included
        let mut new = llama();
        new.as_object_mut().unwrap().remove("rope_theta");
        new["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0,
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192});
        let p = Path::new("c.json");
        let (a, b) = (
            ModelConfig::from_hf_value(&old, p).unwrap(),
            ModelConfig::from_hf_value(&new, p).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(b.rope_theta, 500000.0);
        // a Qwen2 folder saved by transformers 5: theta 1e6 must not fall back to 10,000
        let mut q = llama();
        q["model_type"] = json!("qwen2");
        q.as_object_mut().unwrap().remove("rope_theta");
        q["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1000000.0});
        q["dtype"] = json!("bfloat16");
        let c = ModelConfig::from_hf_value(&q, p).unwrap();
        assert_eq!((c.rope_theta, c.rope_scaling), (1e6, None));
        // both forms present and equal is fine; disagreeing is refused by name
        q["rope_theta"] = json!(1000000.0);
        assert!(ModelConfig::from_hf_value(&q, p).is_ok());
        q["rope_theta"] = json!(10000.0);
        let e = ModelConfig::from_hf_value(&q, p).unwrap_err().to_string();
        assert!(
            e.contains("`rope_parameters.rope_theta`") && e.contains("10000"),
            "{e}"
        );
    }

    #[test]
    fn keys_that_change_the_math_are_refused_by_name() {
        let cases = [
            (
                "partial_rotary_factor",
                json!(0.5),
                "`partial_rotary_factor`: 0.5",
            ),
            (
                "attn_logit_softcapping",
                json!(50.0),
                "`attn_logit_softcapping`: 50",
            ),
            (
                "final_logit_softcapping",
                json!(30.0),
                "`final_logit_softcapping`: 30",
            ),
            (
                "layer_types",
                json!(["full_attention", "sliding_attention"]),
                "`layer_types[1]`: \"sliding_attention\" is not what llama computes",
            ),
            (
                "layer_types",
                json!(["full_attention", "chunked_attention"]),
                "`layer_types[1]`: \"chunked_attention\" is not supported",
            ),
            (
                "no_rope_layers",
                json!([1, 0]),
                "`no_rope_layers`: [1,0]: llama rotates every layer",
            ),
            (
                "rope_parameters",
                json!({"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}),
                "`rope_parameters.rope_type`: \"yarn\"",
            ),
            (
                "rope_parameters",
                json!({"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25}),
                "`rope_parameters.partial_rotary_factor`: 0.25",
            ),
            (
                "rope_parameters",
                json!({"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                       "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
                "one rope per layer type (full_attention, sliding_attention)",
            ),
            (
                "rope_scaling",
                json!({"rope_type": "dynamic", "factor": 2.0}),
                "`rope_scaling.rope_type`: \"dynamic\"",
            ),
        ];
        for (field, value, want) in cases {
            let mut v = llama();
            v[field] = value;
            let e = ModelConfig::from_hf_value(&v, Path::new("m/config.json")).unwrap_err();
            let s = e.to_string();
            assert!(
                s.starts_with("m/config.json: field ") && s.contains(want),
                "{s}"
            );
        }
        // the neutral values of the same keys are accepted
        let mut v = llama();
        v["partial_rotary_factor"] = json!(1.0);
        v["final_logit_softcapping"] = json!(null);
        v["use_sliding_window"] = json!(false);
        v["layer_types"] = json!(["full_attention", "full_attention"]);
        assert!(ModelConfig::from_hf_value(&v, Path::new("c.json")).is_ok());
    }

    #[test]
    fn sliding_windows_and_rope_layers_follow_each_family_class() {
        let p = Path::new("c.json");
        let read = |edit: &dyn Fn(&mut Value)| {
            let mut v = llama();
            v["num_hidden_layers"] = json!(4);
            edit(&mut v);
            ModelConfig::from_hf_value(&v, p)
        };
        // Mistral slides everywhere; without the key its class default (4096) holds
        let c = read(&|v| v["model_type"] = json!("mistral")).unwrap();
        assert_eq!(c.sliding_window, Some(4096));
        assert!((0..4).all(|l| c.layer_window(l) == Some(4096)));
        let c = read(&|v| {
            v["model_type"] = json!("mistral");
            v["sliding_window"] = json!(null);
        })
        .unwrap();
        assert!((0..4).all(|l| c.layer_window(l).is_none()));
        // Qwen2/Qwen3: only with use_sliding_window, from max_window_layers on
        let c = read(&|v| {
            v["model_type"] = json!("qwen3");
            v["sliding_window"] = json!(8);
            v["max_window_layers"] = json!(2);
        })
        .unwrap();
        assert!(c.sliding_layers.is_empty() && c.qk_norm);
        let c = read(&|v| {
            v["model_type"] = json!("qwen2");
            v["use_sliding_window"] = json!(true);
            v["sliding_window"] = json!(8);
            v["max_window_layers"] = json!(2);
        })
        .unwrap();
        assert_eq!(c.sliding_layers, [false, false, true, true]);
        // an explicit layer_types wins, but must agree with use_sliding_window
        let c = read(&|v| {
            v["model_type"] = json!("qwen2");
            v["use_sliding_window"] = json!(true);
            v["sliding_window"] = json!(8);
            v["layer_types"] = json!([
                "sliding_attention",
                "full_attention",
                "full_attention",
                "full_attention"
            ]);
        })
        .unwrap();
        assert_eq!(c.layer_window(0), Some(8));
        let e = read(&|v| {
            v["model_type"] = json!("qwen2");
            v["layer_types"] = json!([
                "sliding_attention",
                "full_attention",
                "full_attention",
                "full_attention"
            ]);
        })
        .unwrap_err();
        assert!(e.to_string().contains("`layer_types[0]`"), "{e}");
        // SmolLM3: every fourth layer without rope unless listed; ties by default
        let c = read(&|v| {
            v["model_type"] = json!("smollm3");
            v.as_object_mut().unwrap().remove("tie_word_embeddings");
        })
        .unwrap();
        assert_eq!(c.rope_layers, [true, true, true, false]);
        assert!(c.tie_word_embeddings);
        let c = read(&|v| {
            v["model_type"] = json!("smollm3");
            v["no_rope_layers"] = json!([0, 1, 1, 1]);
            v["use_sliding_window"] = json!(true);
            v["sliding_window"] = json!(3);
        })
        .unwrap();
        assert_eq!(c.sliding_layers, [true, false, false, false]);
        let e = read(&|v| {
            v["model_type"] = json!("smollm3");
            v["no_rope_layers"] = json!([1, 2, 1, 1]);
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`no_rope_layers[1]`: expected 0 or 1, got 2"),
            "{e}"
        );
        // per-layer lists of the wrong length, and layer counts no model has, are refused
        // before anything is allocated for them (found by whetstone-fuzz: an index panic and
        // a 4 GiB allocation)
        for (edit, want) in [
            (
                json!({"layer_types": []}),
                "`layer_types`: has 0 entries, num_hidden_layers = 4",
            ),
            (
                json!({"model_type": "smollm3", "no_rope_layers": [1, 1]}),
                "`no_rope_layers`: has 2 entries",
            ),
            (
                json!({"num_hidden_layers": 4294967295u64}),
                "`num_hidden_layers`: 4294967295 is more than 4096 layers",
            ),
        ] {
            let e = read(&|v| {
                for (k, x) in edit.as_object().unwrap() {
                    v[k] = x.clone();
                }
            })
            .unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        // Qwen3 without head_dim uses its class default, not hidden / heads
        let c = read(&|v| {
            v["model_type"] = json!("qwen3");
            v.as_object_mut().unwrap().remove("head_dim");
        })
        .unwrap();
        assert_eq!(c.head_dim, 128);
        // the HF config written for a merged export reads back as the same model
        for c in [
            read(&|v| {
                v["model_type"] = json!("smollm3");
                v["use_sliding_window"] = json!(true);
                v["sliding_window"] = json!(3);
            }),
            read(&|v| {
                v["model_type"] = json!("qwen3");
                v["attention_bias"] = json!(true);
                v["use_sliding_window"] = json!(true);
                v["sliding_window"] = json!(5);
                v["max_window_layers"] = json!(1);
            }),
            read(&|v| {
                v["model_type"] = json!("mistral");
                v["sliding_window"] = json!(6);
            }),
        ] {
            let c = c.unwrap();
            let json = c
                .to_hf_json("float32", (c.qkv_bias, c.o_bias, c.mlp_bias))
                .unwrap();
            assert_eq!(ModelConfig::from_hf_value(&json, p).unwrap(), c);
        }
    }

    #[test]
    fn bad_fields_name_the_file_and_field() {
        let cases = [
            (
                "hidden_size",
                json!("big"),
                "field `hidden_size`: expected a non-negative integer",
            ),
            (
                "num_key_value_heads",
                json!(3),
                "field `num_key_value_heads`: 3 does not divide",
            ),
            ("rms_norm_eps", json!(-1.0), "field `rms_norm_eps`"),
            (
                "model_type",
                json!("gpt_neox"),
                "\"gpt_neox\" is not supported",
            ),
            ("hidden_act", json!("gelu"), "field `hidden_act`"),
        ];
        for (field, value, want) in cases {
            let mut v = llama();
            v[field] = value;
            let e = ModelConfig::from_hf_value(&v, Path::new("m/config.json")).unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with("m/config.json: ") && s.contains(want), "{s}");
        }
        let mut v = llama();
        v.as_object_mut().unwrap().remove("vocab_size");
        let e = ModelConfig::from_hf_value(&v, Path::new("c.json")).unwrap_err();
        assert_eq!(e.to_string(), "c.json: field `vocab_size`: missing");
    }
}
