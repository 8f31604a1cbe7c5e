//! The `peft` format: PEFT's adapter folder and a model card.

use super::*;

/// The PEFT folder: the checkpoint's adapter files (tensors re-written with PEFT's header
/// metadata) and a model card.
pub(super) fn peft(job: &Job, source: &ModelSource, stage: &Path) -> Result<(), RunError> {
    let ck = &job.checkpoint;
    let cfg_path = ck.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| user(format!("{}: {e}", cfg_path.display())))?;
    let mut cfg: Value =
        serde_json::from_str(&text).map_err(|e| user(format!("{}: {e}", cfg_path.display())))?;
    cfg["base_model_name_or_path"] = json!(job.base_reference.clone());
    cfg["revision"] = Value::Null;
    write_json(&stage.join("adapter_config.json"), &cfg)?;
    let wf = ck.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&wf, &Device::Cpu)
        .map_err(|e| user(format!("{}: {e}", wf.display())))?;
    let mut named: Vec<(String, Tensor)> = tensors.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    save_safetensors(&stage.join("adapter_model.safetensors"), &named)
        .map_err(|e| user(e.to_string()))?;
    std::fs::write(stage.join("README.md"), model_card(job, source, &cfg)).map_err(internal)?;
    Ok(())
}

pub(super) fn model_card(job: &Job, source: &ModelSource, peft_cfg: &Value) -> String {
    let cfg = &job.cfg;
    let summary: Value = job
        .run
        .summary
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let num = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.4}"));
    let settings: Vec<String> = [
        ("method", json!(cfg.method.as_str())),
        ("peft_type", peft_cfg["peft_type"].clone()),
        ("learning rate", json!(cfg.lr)),
        ("batch size", json!(cfg.batch_size)),
        ("gradient accumulation", json!(cfg.grad_accum)),
        ("max steps", json!(cfg.max_steps)),
        ("sequence length", json!(cfg.seq_len)),
        ("seed", json!(cfg.seed)),
        ("r", peft_cfg["r"].clone()),
        ("lora_alpha", peft_cfg["lora_alpha"].clone()),
        ("target_modules", peft_cfg["target_modules"].clone()),
        ("use_rslora", peft_cfg["use_rslora"].clone()),
        ("use_dora", peft_cfg["use_dora"].clone()),
        ("num_virtual_tokens", peft_cfg["num_virtual_tokens"].clone()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_null())
    .map(|(k, v)| format!("| {k} | {} |", v.to_string().trim_matches('"')))
    .collect();
    format!(
        "---\nbase_model: {base}\nlibrary_name: peft\ntags:\n- whetstone\n- {method}\n---\n\n\
# {name} — {method} adapter\n\n\
Fine-tuned with Whetstone {APP_VERSION} (run `{run}`) from `{base}` ({family}, \
{params} parameters) on the dataset `{dataset}` ({records} records, sha256 `{sha}`).\n\n\
## Use\n\n```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n\
base = AutoModelForCausalLM.from_pretrained(\"{base}\")\nmodel = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n```\n\n\
## Training\n\n| setting | value |\n|---|---|\n{settings}\n\n\
## Results\n\n| metric | value |\n|---|---|\n| steps | {steps} |\n| best eval loss | {best} |\n| final train loss | {last} |\n| tokens/s | {tps} |\n",
        base = job.base_reference,
        method = cfg.method.as_str(),
        name = source.name,
        run = job.run.id,
        family = source.config.family.as_str(),
        params = source.config.parameter_count(),
        dataset = job.dataset["name"].as_str().unwrap_or(&job.run.dataset_id),
        records = job.dataset["records"],
        sha = job.dataset["sha256"].as_str().unwrap_or("?"),
        settings = settings.join("\n"),
        steps = job.run.steps_done,
        best = num(job.run.best_eval_loss),
        last = num(job.run.final_train_loss),
        tps = summary["tokens_per_s"]
            .as_f64()
            .map_or("—".into(), |x| format!("{x:.1}")),
    )
}
