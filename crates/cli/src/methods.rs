//! `whetstone methods` (the comparison table) and `whetstone estimate` (one method's memory).

use crate::common::open_store;
use crate::common::UserError;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use whetstone_studio::formats::ModelSource;
use whetstone_studio::methods::{estimate_run, pick_device, table, usable_bytes};
use whetstone_studio::DataDir;

/// The model to describe: `--model` (id, folder or .gguf), else the demo model.
async fn model_path(model: Option<&str>) -> anyhow::Result<PathBuf> {
    match model {
        Some(m) => {
            let store = open_store().await?;
            Ok(whetstone_studio::models::resolve(&store, m)
                .await
                .map_err(crate::common::model_error)?)
        }
        None => {
            let dir = DataDir::locate().map_err(|e| UserError(e.to_string()))?;
            let p = whetstone_studio::demo_model::path(&dir);
            if !p.exists() {
                return Err(UserError(
                    "pass --model M (a registered id, an HF folder or a .gguf file); the demo model is not installed yet (`whetstone demo` fetches it)".into(),
                )
                .into());
            }
            Ok(p)
        }
    }
}

fn mib(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

fn open(path: &Path) -> anyhow::Result<ModelSource> {
    Ok(ModelSource::open(path).map_err(|e| UserError(e.to_string()))?)
}

pub async fn methods(
    model: Option<&str>,
    device: Option<&str>,
    sets: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let path = model_path(model).await?;
    let source = open(&path)?;
    let dev = pick_device(device).map_err(UserError)?;
    let rows = table(&source.config, &dev, sets).map_err(UserError)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} on {} ({} usable)",
        source.name,
        dev.name,
        usable_bytes(&dev).map_or("unknown".into(), mib)
    );
    println!(
        "  {:<14} {:>13} {:>8} {:>10} {:>4}  {:<20} use",
        "method", "trainable", "%", "memory", "fits", "compute"
    );
    for r in &rows {
        println!(
            "{} {:<14} {:>13} {:>7.3}% {:>10} {:>4}  {:<20} {}{}",
            if r.recommended { "*" } else { " " },
            r.id.as_str(),
            r.trainable_params,
            r.trainable_percent,
            mib(r.est_memory_bytes),
            if r.fits_device { "yes" } else { "no" },
            r.compute,
            r.use_case,
            if r.applicable {
                ""
            } else {
                " (not as is: see notes)"
            },
        );
    }
    println!("  * recommended here; memory is the estimated peak of a training step (`whetstone estimate` explains it)");
    for r in rows.iter().filter(|r| !r.notes.is_empty()) {
        println!("  {}: {}", r.id.as_str(), r.notes);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn estimate(
    model: &str,
    method: &str,
    device: Option<&str>,
    sets: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let path = model_path(Some(model)).await?;
    let source = open(&path)?;
    let dev = pick_device(device).map_err(UserError)?;
    let r = estimate_run(&source.config, method, sets, &dev).map_err(UserError)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (e, cfg) = (&r.estimate, &r.config);
    println!(
        "{} with {} in {} (batch {}, seq_len {}, gradient checkpointing {})",
        source.name,
        cfg.method.as_str(),
        e.compute_dtype,
        cfg.batch_size,
        cfg.seq_len,
        if cfg.gradient_checkpointing {
            "on"
        } else {
            "off"
        }
    );
    println!(
        "  trainable     {} of {} parameters ({:.3}%)",
        e.trainable_params, e.base_params, e.trainable_percent
    );
    println!("  weights       {}", mib(e.weight_bytes));
    println!(
        "  optimizer     {} (params, grads, accumulation, AdamW moments)",
        mib(e.optimizer_bytes)
    );
    println!("  activations   {}", mib(e.activation_bytes));
    println!("  runtime       {}", mib(e.runtime_bytes));
    println!(
        "  peak          {} — {} on {} ({} usable)",
        mib(e.total_bytes),
        if r.fits_device {
            "fits"
        } else {
            "does NOT fit"
        },
        r.device_name,
        r.usable_bytes.map_or("unknown".into(), mib)
    );
    Ok(ExitCode::SUCCESS)
}
