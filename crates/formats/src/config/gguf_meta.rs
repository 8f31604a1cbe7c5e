//! llama.cpp's GGUF metadata read into a [`ModelConfig`]: every key that changes the math is
//! honoured as llama.cpp's graph for the architecture does, or refused by name.

use super::*;

impl ModelConfig {
    /// Build the config from GGUF metadata. `has_tensor` answers whether a tensor of that
    /// (GGUF) name exists, which is how GGUF records tied embeddings and biases.
    pub fn from_gguf(
        path: &Path,
        content: &gguf_file::Content,
        rope: GgufRopeTensors,
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
