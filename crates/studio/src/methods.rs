//! The method comparison table with live numbers for one model on one device.
//!
//! The descriptive columns come from each method's `facts().description`; trainable parameters, memory and whether it fits are
//! computed by `whetstone_engine::estimate` for the chosen model, run settings and device.

use candle_core::DType;
use serde::Serialize;
use whetstone_engine::config::{key_info, KeyKind};
use whetstone_engine::estimate::{estimate, Estimate};
use whetstone_engine::{detect_devices, DeviceInfo, DeviceKind, MethodKind, TrainConfig};
use whetstone_formats::ModelConfig;

/// One row of the table; field names are a stable contract (docs/design.md#comparison-table).
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct MethodRow {
    pub id: MethodKind,
    pub name: &'static str,
    #[ts(type = "number")]
    pub trainable_params: u64,
    pub trainable_percent: f64,
    #[ts(type = "number")]
    pub est_memory_bytes: u64,
    pub fits_device: bool,
    pub changes_architecture: &'static str,
    pub inference_latency: &'static str,
    pub compute: &'static str,
    pub use_case: &'static str,
    pub difficulty: &'static str,
    /// The stable keys of the descriptive columns, which the window translates by
    /// (`wizard.phrase.<key>`); the English above is the fallback.
    pub phrases: RowPhrases,
    /// False where the method does not apply to this model as it is (BitFit without biases:
    /// the numbers are then those of `bitfit.add_biases=true`).
    pub applicable: bool,
    pub recommended: bool,
    pub notes: String,
    pub estimate: Estimate,
}

/// Translation keys of a row's descriptive columns.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct RowPhrases {
    pub changes_architecture: &'static str,
    pub inference_latency: &'static str,
    pub compute: &'static str,
    pub use_case: &'static str,
    pub difficulty: &'static str,
}

/// [`estimate`] for a run on `device` (its native bf16 decides `dtype=auto`; the CPU decides
/// whether the explicit training path, and so its activations, applies).
pub fn estimate_on(model: &ModelConfig, cfg: &TrainConfig, device: &DeviceInfo) -> Estimate {
    estimate(model, cfg, device.bf16, device.kind == DeviceKind::Cpu)
}

/// Memory the device can give a run: 90 % of it (the OS, the window and the driver keep the rest).
pub fn usable_bytes(device: &DeviceInfo) -> Option<u64> {
    device.memory_bytes.map(|b| b / 10 * 9)
}

/// The table for `model` on `device`, every method with `base` settings (`--set` values
/// apply to every row; each row takes its own method's defaults for the rest).
pub fn table(
    model: &ModelConfig,
    device: &DeviceInfo,
    sets: &[String],
) -> Result<Vec<MethodRow>, String> {
    let usable = usable_bytes(device);
    let has_bias = model.qkv_bias || model.o_bias || model.mlp_bias;
    let mut rows = vec![];
    for m in MethodKind::ALL {
        let mut cfg = TrainConfig::for_method(m);
        for s in sets {
            cfg.set_pair(s).map_err(|e| format!("--set {s}: {e}"))?;
        }
        let mut notes = vec![];
        let applicable = m != MethodKind::Bitfit || has_bias || cfg.methods.bitfit.add_biases;
        if m == MethodKind::Bitfit && !has_bias {
            cfg.methods.bitfit.add_biases = true;
            notes.push(format!(
                "this {} model has no biases: BitFit applies only with bitfit.add_biases=true (zero-initialised biases are added and trained)",
                model.family.as_str()
            ));
        }
        // QLoRA brings its own adapter defaults (r 16 on every linear); its row would read as
        // costing more than LoRA's for that alone, so the row says what differs and what it
        // costs at LoRA's adapter settings (same batch and sequence length in every row)
        let lora_row = {
            let mut c = TrainConfig::for_method(MethodKind::Lora);
            for s in sets {
                c.set_pair(s).map_err(|e| format!("--set {s}: {e}"))?;
            }
            c.methods.lora
        };
        if m == MethodKind::Qlora
            && (cfg.methods.lora.r != lora_row.r || cfg.methods.lora.targets != lora_row.targets)
        {
            let mut same = cfg.clone();
            same.methods.lora = lora_row.clone();
            let at_lora = estimate_on(model, &same, device);
            // the modules this model has, as training will pick them
            let modules = |t: &[String]| {
                whetstone_engine::config::resolve_targets("lora.targets", t, model)
                    .map(|v| v.join(","))
                    .unwrap_or_else(|_| t.join(","))
            };
            notes.push(format!(
                "QLoRA's own adapter defaults: r {} on {} (the LoRA row: r {} on {}); with LoRA's adapter settings the estimate is {:.2} GiB",
                cfg.methods.lora.r,
                modules(&cfg.methods.lora.targets),
                lora_row.r,
                modules(&lora_row.targets),
                at_lora.total_bytes as f64 / (1u64 << 30) as f64
            ));
        }
        if m == MethodKind::Qlora && device.kind == DeviceKind::Cpu {
            notes.push("on the CPU the base is dequantized per layer in f32: less memory, slower steps; paged optimizer states are a GPU feature and not used".into());
        }
        if device.kind == DeviceKind::Cpu && cfg.compute_dtype(device.bf16) != DType::F32 {
            notes.push("bf16 on the CPU: candle widens each bf16 matmul to f32, so steps take about twice as long as in f32 and the peak runs above this estimate (measured 0.5–0.95×); bf16 is meant for GPUs".into());
        }
        if m == MethodKind::PrefixTuning {
            notes.push(
                "the reparameterisation MLP trains; exports keep only the prefixes it produces"
                    .into(),
            );
        }
        let est = estimate_on(model, &cfg, device);
        let d = m.spec().facts().description;
        rows.push(MethodRow {
            id: m,
            name: d.name,
            trainable_params: est.trainable_params,
            trainable_percent: est.trainable_percent,
            est_memory_bytes: est.total_bytes,
            fits_device: usable.is_none_or(|u| est.total_bytes <= u),
            changes_architecture: d.changes_architecture.en,
            inference_latency: d.inference_latency.en,
            compute: d.compute.en,
            use_case: d.use_case.en,
            difficulty: d.difficulty.en,
            phrases: RowPhrases {
                changes_architecture: d.changes_architecture.key,
                inference_latency: d.inference_latency.key,
                compute: d.compute.key,
                use_case: d.use_case.key,
                difficulty: d.difficulty.key,
            },
            applicable,
            recommended: false,
            notes: notes.join("; "),
            estimate: est,
        });
    }
    let pick = recommend(&rows, device);
    for r in &mut rows {
        r.recommended = r.id == pick;
    }
    Ok(rows)
}

/// QLoRA on a GPU with little memory (under 16 GiB, or where LoRA would not fit), LoRA
/// otherwise.
fn recommend(rows: &[MethodRow], device: &DeviceInfo) -> MethodKind {
    let fits = |m: MethodKind| rows.iter().any(|r| r.id == m && r.fits_device);
    let small_gpu =
        device.kind != DeviceKind::Cpu && device.memory_bytes.is_some_and(|b| b < 16 << 30);
    if (small_gpu || !fits(MethodKind::Lora)) && fits(MethodKind::Qlora) {
        MethodKind::Qlora
    } else {
        MethodKind::Lora
    }
}

/// `want` (`cpu`, `cuda:N`, `metal`), else the first available GPU, else the CPU.
pub fn pick_device(want: Option<&str>) -> Result<DeviceInfo, String> {
    let devices = detect_devices();
    let label = DeviceInfo::label;
    let found = match want {
        Some(w) => devices
            .iter()
            .find(|d| w == label(d) || (d.ordinal == 0 && w == d.kind.as_str())),
        None => devices
            .iter()
            .find(|d| d.available && d.kind != DeviceKind::Cpu)
            .or_else(|| devices.first()),
    };
    found.cloned().ok_or_else(|| {
        let known: Vec<String> = devices.iter().map(label).collect();
        format!(
            "--device {}: no such device (this machine has {})",
            want.unwrap_or(""),
            known.join(", ")
        )
    })
}

/// `whetstone estimate --json`: the estimate and whether it fits the device.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct EstimateReport {
    #[serde(flatten)]
    pub estimate: Estimate,
    pub est_memory_bytes: u64,
    pub fits_device: bool,
    pub device: String,
    pub device_name: String,
    pub usable_bytes: Option<u64>,
    pub config: TrainConfig,
}

/// Estimate `method` with `sets` on `model` (settings validated as a run would be).
pub fn estimate_run(
    model: &ModelConfig,
    method: &str,
    sets: &[String],
    device: &DeviceInfo,
) -> Result<EstimateReport, String> {
    let mut cfg = TrainConfig::for_method(MethodKind::parse(method)?);
    for s in sets {
        cfg.set_pair(s).map_err(|e| format!("--set {s}: {e}"))?;
    }
    cfg.validate(model)?;
    let e = estimate_on(model, &cfg, device);
    let usable = usable_bytes(device);
    Ok(EstimateReport {
        est_memory_bytes: e.total_bytes,
        fits_device: usable.is_none_or(|u| e.total_bytes <= u),
        device: device.label(),
        device_name: device.name.clone(),
        usable_bytes: usable,
        config: cfg,
        estimate: e,
    })
}

/// One run-config key as the settings form shows it.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct SettingSpec {
    pub key: String,
    /// The value after `sets`, as `--set` takes it (`none` for unset optional values).
    pub value: String,
    /// The method's default.
    pub default: String,
    pub help: String,
    pub group: String,
    pub kind: KeyKind,
    pub choices: Vec<String>,
    /// False when the key changes nothing for this method (`lora.r` for (IA)3).
    pub applies: bool,
}

/// Every `--set` key for `method` with `sets` applied: value, default, help and group.
pub fn settings_schema(method: &str, sets: &[String]) -> Result<Vec<SettingSpec>, String> {
    let defaults = TrainConfig::for_method(MethodKind::parse(method)?);
    let mut cfg = defaults.clone();
    for s in sets {
        cfg.set_pair(s).map_err(|e| format!("--set {s}: {e}"))?;
    }
    Ok(key_info()
        .map(|k| SettingSpec {
            key: k.key.to_string(),
            value: cfg.get(k.key).unwrap_or_default(),
            default: defaults.get(k.key).unwrap_or_default(),
            help: k.help.to_string(),
            group: k.group.to_string(),
            kind: k.kind,
            choices: k.choices.iter().map(|c| c.to_string()).collect(),
            applies: cfg.key_applies(k.key),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's facts the UI's mocked backend (Playwright, Vitest) works from: every
    /// key with its help, every method's table columns, default learning rate, default
    /// config and the keys that apply to it, and trainable-parameter counts on SmolLM2-135M
    /// for a grid of settings, which the mock's own count is checked against. Written here
    /// so the mock never re-states what Rust defines; on CI a stale committed file fails.
    #[test]
    fn engine_facts_for_the_ui_mock() {
        let smol = crate::curated::model_config("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        let keys: Vec<serde_json::Value> = key_info()
            .map(|k| {
                serde_json::json!({
                    "key": k.key, "group": k.group, "kind": k.kind, "help": k.help,
                    "choices": k.choices,
                })
            })
            .collect();
        let grid: &[&[&str]] = &[
            &[],
            &["lora.r=4"],
            &["lora.r=16", "lora.targets=all-linear"],
            &["lora.targets=q_proj,v_proj,down_proj"],
            &["ia3.targets=all-linear"],
            &["prompt.n_virtual_tokens=10"],
            &["prefix.encoder_hidden=128"],
            &["adapter.bottleneck=32"],
            &["freeze.trainable_layers=4", "freeze.train_norm=false"],
            &["bitfit.add_biases=true"],
        ];
        let methods: Vec<serde_json::Value> = MethodKind::ALL
            .into_iter()
            .map(|m| {
                let d = m.spec().facts().description;
                let config = TrainConfig::for_method(m);
                let trainable: Vec<serde_json::Value> = grid
                    .iter()
                    .map(|sets| {
                        let mut c = config.clone();
                        for s in *sets {
                            c.set_pair(s).unwrap();
                        }
                        let n = whetstone_engine::estimate::trainable_params(&smol, &c);
                        serde_json::json!({ "sets": sets, "params": n })
                    })
                    .collect();
                let applies: Vec<&str> = key_info()
                    .map(|k| k.key)
                    .filter(|k| config.key_applies(k))
                    .collect();
                // as the table counts it: BitFit on this bias-free model with added biases
                let mut table_cfg = config.clone();
                if m == MethodKind::Bitfit {
                    table_cfg.methods.bitfit.add_biases = true;
                }
                let est = estimate(&smol, &table_cfg, false, true);
                // what `export --format F` says for a run of this method (null: it can)
                use crate::export::{check_format, ExportFormat as F};
                let refusals: serde_json::Map<String, serde_json::Value> =
                    [F::Peft, F::Merged, F::Gguf, F::Ollama]
                        .into_iter()
                        .map(|f| {
                            let name = serde_json::to_value(f).unwrap();
                            let why = check_format(m, f).err();
                            (name.as_str().unwrap().to_string(), why.into())
                        })
                        .collect();
                serde_json::json!({
                    "id": m,
                    "export_refusals": refusals,
                    "gguf_adapter": m.spec().facts().exports.gguf_adapter,
                    "table_trainable": est.trainable_params,
                    "table_memory_cpu": est.total_bytes,
                    "columns": [d.name, d.changes_architecture.en, d.inference_latency.en, d.compute.en, d.use_case.en, d.difficulty.en],
                    "phrases": {
                        "changes_architecture": d.changes_architecture.key,
                        "inference_latency": d.inference_latency.key,
                        "compute": d.compute.key,
                        "use_case": d.use_case.key,
                        "difficulty": d.difficulty.key,
                    },
                    "default_lr": m.default_lr(),
                    "config": config,
                    "applies": applies,
                    "trainable_smollm2": trainable,
                })
            })
            .collect();
        let facts = serde_json::json!({
            "generated_by": "crates/studio/src/methods.rs engine_facts_for_the_ui_mock (cargo test); do not edit",
            "smollm2_params": whetstone_engine::estimate::base_params(&smol),
            "keys": keys,
            "methods": methods,
        });
        let text = serde_json::to_string_pretty(&facts).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ui/tests/mock/engine-facts.json");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if old != text {
            std::fs::write(&path, &text).unwrap();
            assert!(
                std::env::var_os("CI").is_none(),
                "{} was stale (rewritten now): commit it",
                path.display()
            );
        }
    }

    fn cpu() -> DeviceInfo {
        DeviceInfo {
            kind: DeviceKind::Cpu,
            ordinal: 0,
            name: "cpu".into(),
            available: true,
            threads: Some(2),
            memory_bytes: Some(64 << 30),
            features: vec![],
            bf16: false,
            note: None,
        }
    }

    /// Found in review: on the CPU the QLoRA row read 20.0 GiB against LoRA's 12.5 GiB for
    /// SmolLM2, only because QLoRA's defaults train every linear at r 16.
    #[test]
    fn the_qlora_row_says_what_differs_from_the_lora_row() {
        let json = serde_json::json!({
            "model_type": "llama", "vocab_size": 512, "hidden_size": 128, "intermediate_size": 256,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true
        });
        let model = ModelConfig::from_hf_value(&json, std::path::Path::new("config.json")).unwrap();
        let rows = table(&model, &cpu(), &[]).unwrap();
        let row = |m| rows.iter().find(|r| r.id == m).unwrap();
        let (lora, qlora) = (row(MethodKind::Lora), row(MethodKind::Qlora));
        assert!(qlora.est_memory_bytes > lora.est_memory_bytes);
        assert!(
            qlora.notes.contains("r 16 on q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (the LoRA row: r 8 on q_proj,k_proj,v_proj,o_proj)"),
            "{}",
            qlora.notes
        );
        // the estimate at LoRA's adapter settings is the smaller one the row quotes
        let gib: f64 = qlora
            .notes
            .split("the estimate is ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(
            gib * ((1u64 << 30) as f64) < qlora.est_memory_bytes as f64,
            "{gib}"
        );
        // the same adapter settings given to every row: nothing to explain
        let sets = ["lora.r=4".into(), "lora.targets=q_proj,v_proj".into()];
        let rows = table(&model, &cpu(), &sets).unwrap();
        let q = rows.iter().find(|r| r.id == MethodKind::Qlora).unwrap();
        assert!(!q.notes.contains("own adapter defaults"), "{}", q.notes);
    }
}
