//! The architecture of a decoder-only model, normalised from wherever it was described:
//! an HF `config.json` or the metadata of a GGUF file.
//!
//! One struct serves the Llama layout (SmolLM2, Llama 2/3, TinyLlama), Qwen2 and Mistral:
//! they differ only in which projections carry a bias, the rope settings and the defaults.

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
    Mistral,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
        }
    }
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
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
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
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(bad(
                "rope_theta",
                format!("{} must be a number > 1", self.rope_theta),
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
            Family::Llama => {
                if qkv != o {
                    return Err("Llama's `attention_bias` gives q, k, v and o biases together; this model has them on only some".into());
                }
                ("LlamaForCausalLM", "llama", qkv, mlp)
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
        if self.family == Family::Llama {
            v["attention_bias"] = json!(attention_bias);
            v["mlp_bias"] = json!(mlp_bias);
        }
        if self.family != Family::Llama {
            v["sliding_window"] = Value::Null;
            v["use_sliding_window"] = json!(false);
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
                    "missing (expected \"llama\", \"qwen2\" or \"mistral\")",
                )
            })?;
        let family = match model_type {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "mistral" => Family::Mistral,
            other => {
                return Err(field_err(
                    "model_type",
                    &format!(
                    "architecture \"{other}\" is not supported (supported: llama, qwen2, mistral)"
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
        if let Some(act) = json.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(field_err(
                    "hidden_act",
                    &format!("\"{act}\" is not supported (only silu)"),
                ));
            }
        }
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
        refuse_unsupported_math(json, &field_err)?;
        let (rope_theta, rope_scaling) = rope_settings(json, &field_err)?;
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
            num_layers: req("num_hidden_layers")?,
            num_heads,
            num_kv_heads: uint("num_key_value_heads")?.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: float("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            max_position_embeddings: uint("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: boolean("tie_word_embeddings", false)?,
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family == Family::Llama && attention_bias,
            mlp_bias: family == Family::Llama && boolean("mlp_bias", false)?,
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
        rope_factors: Option<Vec<f32>>,
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
            other => {
                return Err(FileError::new(
                    path,
                    format!("metadata key `general.architecture`: GGUF architecture \"{other}\" is not supported (supported: llama, mistral, qwen2)"),
                ))
            }
        };
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
        // keys that change the math and that these families do not implement
        if let Some(dims) = get_u("rope.dimension_count")? {
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
        for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if let Some(v) = get_f(k)?.filter(|&v| v != 0.0) {
                return Err(FileError::new(
                    path,
                    format!(
                        "metadata key `{}` = {v}: logit soft-capping is not supported",
                        key(k)
                    ),
                ));
            }
        }
        if let Some(w) = get_u("attention.sliding_window")?.filter(|&w| w != 0) {
            return Err(FileError::new(
                path,
                format!(
                    "metadata key `{}` = {w}: sliding-window attention is not supported",
                    key("attention.sliding_window")
                ),
            ));
        }
        let rope_scaling = match (rope_factors, linear_factor) {
            (Some(factors), _) => Some(RopeScaling::Factors { factors }),
            (None, Some(factor)) => Some(RopeScaling::Linear { factor }),
            (None, None) => None,
        };
        let cfg = ModelConfig {
            family,
            vocab_size,
            hidden_size,
            intermediate_size: req_u("feed_forward_length")?,
            num_layers: req_u("block_count")?,
            num_heads,
            num_kv_heads: get_u("attention.head_count_kv")?.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: get_f("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
            rope_theta: get_f("rope.freq_base")?.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: get_u("context_length")?.unwrap_or(2048),
            tie_word_embeddings: !has("output.weight"),
            qkv_bias: has("blk.0.attn_q.bias"),
            o_bias: has("blk.0.attn_output.bias"),
            mlp_bias: has("blk.0.ffn_up.bias"),
            bos_token_id: md_u32("tokenizer.ggml.bos_token_id"),
            eos_token_ids: md_u32("tokenizer.ggml.eos_token_id").into_iter().collect(),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
}

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
    let set = |k: &str| json.get(k).filter(|v| !v.is_null());
    for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if let Some(v) = set(k) {
            return Err(field_err(
                k,
                &format!("{v}: logit soft-capping is not supported"),
            ));
        }
    }
    if set("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(field_err(
            "use_sliding_window",
            "true: sliding-window attention is not supported",
        ));
    }
    if let Some(Value::Array(types)) = set("layer_types") {
        if let Some((i, t)) = types
            .iter()
            .enumerate()
            .find(|(_, t)| t.as_str() != Some("full_attention"))
        {
            return Err(field_err(
                &format!("layer_types[{i}]"),
                &format!("{t} is not supported (every layer must be \"full_attention\")"),
            ));
        }
    }
    Ok(())
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
                "use_sliding_window",
                json!(true),
                "`use_sliding_window`: true",
            ),
            (
                "layer_types",
                json!(["full_attention", "sliding_attention"]),
                "`layer_types[1]`: \"sliding_attention\"",
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
