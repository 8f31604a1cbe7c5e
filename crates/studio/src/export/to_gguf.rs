//! The `gguf` format: a LoRA adapter llama.cpp loads, or a whole merged model (f16 / q8_0 /
//! f32) in the base file's tensor order.

use super::*;

/// The LoRA checkpoint as a llama.cpp adapter.
pub(super) fn gguf_adapter(
    job: &Job,
    source: &ModelSource,
    out: &Path,
    dtype: GgmlDType,
) -> Result<(), RunError> {
    gguf_out::check_llama_cpp_math(&source.config)
        .map_err(|e| user(format!("cannot export as GGUF: {e}")))?;
    let ck = &job.checkpoint;
    let wf = ck.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&wf, &Device::Cpu)
        .map_err(|e| user(format!("{}: {e}", wf.display())))?;
    let cfg = &job.cfg.methods.lora;
    let scale_alpha = if cfg.rslora {
        cfg.alpha * (cfg.r as f64).sqrt()
    } else {
        cfg.alpha
    };
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort_by_key(|n| tensor_order(n));
    let mut out_tensors = vec![];
    for name in names {
        // base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight
        let hf = name.strip_prefix("base_model.model.").unwrap_or(name);
        let (module, which) = if let Some(m) = hf.strip_suffix(".lora_A.weight") {
            (m, "lora_a")
        } else if let Some(m) = hf.strip_suffix(".lora_B.weight") {
            (m, "lora_b")
        } else {
            return Err(user(format!(
                "{}: tensor `{name}` is not a LoRA matrix; llama.cpp adapters hold only lora_A / lora_B",
                wf.display()
            )));
        };
        let base_name = format!("{module}.weight");
        let g = gguf_out::gguf_name(&base_name, source.config.family).ok_or_else(|| {
            user(format!(
                "{}: `{module}` has no llama.cpp counterpart",
                wf.display()
            ))
        })?;
        let mut t = tensors[name].clone();
        if which == "lora_b" {
            if let Some(heads) = gguf_out::qk_heads(&base_name, &source.config) {
                t = gguf_out::permute_qk(&t, heads).map_err(internal)?;
            }
        }
        let q = gguf_out::to_qtensor(&t, dtype).map_err(internal)?;
        out_tensors.push((format!("{g}.{which}"), q));
    }
    let name = format!(
        "{} {} adapter ({})",
        source.name,
        job.cfg.method.as_str(),
        job.run.id
    );
    let md = gguf_out::adapter_metadata(&source.config, scale_alpha as f32, &name);
    gguf_out::write(out, &md, &out_tensors).map_err(user)
}

/// Sort key: layer number, then name, so files list layer 2 before layer 10.
pub(super) fn tensor_order(name: &str) -> (usize, String) {
    let layer = name
        .split("layers.")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    (layer, name.to_string())
}

/// The whole merged model as GGUF. From a GGUF base: its metadata (tokenizer, chat template,
/// hyperparameters) and tensor order. From an HF folder: metadata written from the config and
/// `tokenizer.json` (byte-level BPE tokenizers), Llama 3 rope scaling as `rope_freqs.weight`.
pub(super) fn gguf_model(
    job: &Job,
    source: &ModelSource,
    out: &Path,
    dtype: GgmlDType,
    progress: &dyn Fn(&str),
) -> Result<(), RunError> {
    let cfg = &source.config;
    gguf_out::check_llama_cpp_math(cfg).map_err(|e| user(format!("cannot export as GGUF: {e}")))?;
    // refuse a tokenizer llama.cpp cannot be told about before the slow part
    let tokenizer_md = match source.gguf_content() {
        Some(_) => vec![],
        None => whetstone_formats::tokenizer::gguf_tokenizer_metadata(
            &source.tokenizer,
            cfg.vocab_size,
            source.chat_template.as_deref(),
            &source.path.join("tokenizer.json"),
        )
        .map_err(|e| user(e.to_string()))?,
    };
    let (model, tensors) = merged_tensors(job, &source.path, DType::F32, progress)?;
    // biases BitFit added must be ones the architecture's loader asks for
    cfg.to_hf_json("float32", merge::bias_layout(&model))
        .map_err(|e| user(format!("the merged model cannot be written as GGUF: {e}")))?;
    progress("quantizing and writing model.gguf");
    // llama.cpp's layout: Q/K rows interleaved for the `llama` architecture, Gemma's norm
    // weights stored as 1 + w
    let convert = |hf: &str, t: Tensor| -> Result<candle_core::quantized::QTensor, RunError> {
        let t = match gguf_out::qk_heads(hf, cfg) {
            Some(h) => gguf_out::permute_qk(&t, h).map_err(internal)?,
            None => t,
        };
        let t = match whetstone_formats::weights::gguf_norm_shift(hf, cfg.family) {
            Some(shift) => (t + shift).map_err(internal)?,
            None => t,
        };
        gguf_out::to_qtensor(&t, dtype).map_err(internal)
    };
    let f32_tensor = |t: &Tensor| gguf_out::to_qtensor(t, GgmlDType::F32).map_err(internal);
    let mut by_name: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut out_tensors = vec![];
    let md = match source.gguf_content() {
        Some(content) => {
            let mut infos: Vec<(&String, u64)> = content
                .tensor_infos
                .iter()
                .map(|(n, i)| (n, i.offset))
                .collect();
            infos.sort_by_key(|(_, off)| *off);
            let mut file = std::fs::File::open(&source.path).map_err(internal)?;
            for (gname, _) in infos {
                match whetstone_formats::weights::hf_name(gname, cfg.family) {
                    Some(hf) if by_name.contains_key(&hf) => {
                        let t = by_name.remove(&hf).expect("checked");
                        out_tensors.push((gname.clone(), convert(&hf, t)?));
                    }
                    // tensors with no HF counterpart (rope_freqs) are copied as they are
                    _ => {
                        let q = content
                            .tensor(&mut file, gname, &Device::Cpu)
                            .map_err(|e| user(format!("{}: {e}", source.path.display())))?;
                        let t = q.dequantize(&Device::Cpu).map_err(internal)?;
                        out_tensors.push((gname.clone(), f32_tensor(&t)?));
                    }
                }
            }
            let mut md: Vec<(String, GgufValue)> = content
                .metadata
                .iter()
                // candle's writer always aligns to 32 bytes; the base's own value would lie
                .filter(|(k, _)| !matches!(k.as_str(), "general.file_type" | "general.alignment"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            md.push((
                "general.file_type".into(),
                GgufValue::U32(gguf_out::file_type(dtype)),
            ));
            md
        }
        None => {
            if let Some(whetstone_formats::RopeScaling::Llama3 { .. }) = &cfg.rope_scaling {
                // llama.cpp divides each rotary frequency by its factor
                let scaled = whetstone_engine::rope::rope_inv_freq(cfg);
                let plain =
                    whetstone_engine::rope::rope_inv_freq(&whetstone_formats::ModelConfig {
                        rope_scaling: None,
                        ..cfg.clone()
                    });
                let factors: Vec<f32> = plain.iter().zip(&scaled).map(|(p, s)| p / s).collect();
                let n = factors.len();
                let t = Tensor::from_vec(factors, n, &Device::Cpu).map_err(internal)?;
                out_tensors.push(("rope_freqs.weight".into(), f32_tensor(&t)?));
            } else if let Some(whetstone_formats::RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            }) = &cfg.rope_scaling
            {
                // Phi-3: llama.cpp picks the long set when its context exceeds the original
                for (name, factors) in [
                    ("rope_factors_short.weight", short_factor),
                    ("rope_factors_long.weight", long_factor),
                ] {
                    let v: Vec<f32> = factors.iter().map(|&x| x as f32).collect();
                    let t = Tensor::from_vec(v, factors.len(), &Device::Cpu).map_err(internal)?;
                    out_tensors.push((name.into(), f32_tensor(&t)?));
                }
            } else if let Some(whetstone_formats::RopeScaling::Factors { .. }) = &cfg.rope_scaling {
                return Err(internal(
                    "per-frequency rope factors come only from GGUF bases",
                ));
            }
            let tokens: Vec<&str> = tokenizer_md
                .iter()
                .find(|(k, _)| k == "tokenizer.ggml.tokens")
                .and_then(|(_, v)| v.to_vec().ok())
                .map(|v| {
                    v.iter()
                        .filter_map(|t| t.to_string().ok())
                        .map(|t| t.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let name = gguf_out::llama_cpp_model_name(&source.name, &tokens);
            let mut md = gguf_out::model_metadata(cfg, &name, gguf_out::file_type(dtype));
            md.extend(tokenizer_md);
            md
        }
    };
    // every tensor not placed yet, in model order: all of them for an HF base; biases BitFit
    // added or an untied head for a GGUF base
    let mut rest: Vec<(String, Tensor)> = by_name.into_iter().collect();
    rest.sort_by_key(|a| tensor_order(&a.0));
    for (hf, t) in rest {
        let g = gguf_out::gguf_name(&hf, cfg.family)
            .ok_or_else(|| internal(format!("`{hf}` has no GGUF name")))?;
        out_tensors.push((g, convert(&hf, t)?));
    }
    gguf_out::write(out, &md, &out_tensors).map_err(user)
}
