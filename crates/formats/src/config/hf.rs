//! `config.json` in both transformers generations (4: top-level `rope_theta` / `rope_scaling`;
//! 5: `rope_parameters`), read into a [`ModelConfig`] and written back for merged exports.

use super::hf_keys::*;
use super::*;

impl ModelConfig {
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
}
