//! The `merged` format: an HF model folder with the adapter folded into the weights, and
//! the tokenizer files it needs.

use super::*;

/// The base with the checkpoint applied and folded in, as HF-named tensors in `dtype`.
pub(super) fn merged_tensors(
    job: &Job,
    source_path: &Path,
    dtype: DType,
    progress: &dyn Fn(&str),
) -> Result<(whetstone_engine::DecoderModel, Vec<(String, Tensor)>), RunError> {
    progress("loading the base model with the adapter");
    let loaded = crate::inference::load(source_path, "cpu", Some(&job.checkpoint), false)
        .map_err(|e| user(e.to_string()))?;
    let mut model = loaded.model;
    progress("merging the adapter into the weights");
    merge::merge_in_place(&mut model).map_err(user)?;
    let tensors = merge::hf_tensors(&mut model)
        .and_then(|ts| {
            ts.into_iter()
                .map(|(n, t)| Ok((n, t.to_dtype(dtype)?)))
                .collect::<candle_core::Result<Vec<_>>>()
        })
        .map_err(internal)?;
    Ok((model, tensors))
}

/// An HF model folder with the adapter merged in.
pub(super) fn merged_folder(
    job: &Job,
    source: &ModelSource,
    stage: &Path,
    dtype: DType,
    progress: &dyn Fn(&str),
) -> Result<(), RunError> {
    let (model, tensors) = merged_tensors(job, &source.path, dtype, progress)?;
    progress("writing model.safetensors");
    save_safetensors(&stage.join("model.safetensors"), &tensors)
        .map_err(|e| user(e.to_string()))?;
    drop(tensors);
    let biases = merge::bias_layout(&model);
    let mut config = source
        .config
        .to_hf_json(torch_dtype_name(dtype), biases)
        .map_err(|e| {
            user(format!(
                "the merged model cannot be described as an HF config: {e}"
            ))
        })?;
    if source.kind == SourceKind::HfFolder {
        // keep what the original config says beyond the architecture (pad id, init range...)
        if let Ok(Value::Object(orig)) = std::fs::read_to_string(source.path.join("config.json"))
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            let mut merged = orig;
            if merged.contains_key("dtype") {
                // newer transformers name the storage type `dtype`
                merged.insert("dtype".into(), json!(torch_dtype_name(dtype)));
            }
            for (k, v) in config.as_object().cloned().unwrap_or_default() {
                if !v.is_null() || !merged.contains_key(&k) {
                    merged.insert(k, v);
                }
            }
            config = Value::Object(merged);
        }
    }
    write_json(&stage.join("config.json"), &config)?;
    progress("writing the tokenizer files");
    tokenizer_files(source, stage)
}

/// `tokenizer.json`, `tokenizer_config.json` (with the chat template) and
/// `generation_config.json`: copied from an HF folder, written from a GGUF base's metadata.
pub(super) fn tokenizer_files(source: &ModelSource, stage: &Path) -> Result<(), RunError> {
    if source.kind == SourceKind::HfFolder {
        let mut copied_generation = false;
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json",
            "tokenizer.model",
            "chat_template.jinja",
        ] {
            let f = source.path.join(name);
            if f.exists() {
                copy(&f, &stage.join(name))?;
                copied_generation |= name == "generation_config.json";
            }
        }
        if copied_generation {
            return Ok(());
        }
    } else {
        write_json(&stage.join("tokenizer.json"), &source.tokenizer.json)?;
        let tok = &source.tokenizer;
        let mut tc = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": false,
            "model_max_length": source.config.max_position_embeddings,
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
        });
        if let Some(t) = &source.chat_template {
            tc["chat_template"] = json!(t);
        }
        write_json(&stage.join("tokenizer_config.json"), &tc)?;
    }
    let c = &source.config;
    let eos = match c.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    write_json(
        &stage.join("generation_config.json"),
        &json!({"bos_token_id": c.bos_token_id, "eos_token_id": eos, "do_sample": false}),
    )
}
