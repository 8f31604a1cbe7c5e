//! `whetstone models add|list`.

use crate::UserError;
use std::process::ExitCode;
use whetstone_studio::hub::DownloadProgress;
use whetstone_studio::models::{self, ModelError, ModelRecord};
use whetstone_studio::store::Store;
use whetstone_studio::DataDir;

/// Open the data directory's database (creating both if needed).
pub async fn open_store() -> anyhow::Result<Store> {
    let dir = DataDir::locate().map_err(|e| UserError(e.to_string()))?;
    dir.ensure().map_err(|e| UserError(e.to_string()))?;
    let store = Store::open(&dir.database())
        .await
        .map_err(|e| UserError(e.to_string()))?;
    // A run whose process died (kill -9, crash) is marked interrupted, ready for `resume`.
    whetstone_studio::history::recover_interrupted(&store)
        .await
        .map_err(crate::train::run_error)?;
    Ok(store)
}

/// Model errors are the user's to fix, except a failing database.
pub fn model_error(e: ModelError) -> anyhow::Error {
    match e {
        ModelError::Store(s) => anyhow::anyhow!(s),
        other => UserError(other.to_string()).into(),
    }
}

fn human_params(n: Option<i64>) -> String {
    match n {
        Some(n) if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        Some(n) if n >= 1_000_000 => format!("{:.0}M", n as f64 / 1e6),
        Some(n) => format!("{n}"),
        None => "-".into(),
    }
}

fn human_size(n: Option<i64>) -> String {
    n.map(|b| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64))
        .unwrap_or_else(|| "-".into())
}

/// A one-line progress bar on stderr (only when stderr is a terminal or --json is off).
fn download_bar(p: DownloadProgress) {
    if p.bytes_total == 0 {
        return;
    }
    let frac = p.bytes_done as f64 / p.bytes_total as f64;
    let filled = (frac * 30.0).round() as usize;
    eprint!(
        "\rdownloading [{}{}] {:>5.1}% {:.1}/{:.1} MiB, {}/{} files",
        "#".repeat(filled.min(30)),
        " ".repeat(30 - filled.min(30)),
        frac * 100.0,
        p.bytes_done as f64 / (1u64 << 20) as f64,
        p.bytes_total as f64 / (1u64 << 20) as f64,
        p.files_done,
        p.files_total
    );
}

pub async fn add(reference: &str, json: bool) -> anyhow::Result<ExitCode> {
    let dir = DataDir::locate().map_err(|e| UserError(e.to_string()))?;
    let store = open_store().await?;
    let hub = reference.starts_with("hf:");
    let m = models::add(&store, &dir.models(), reference, move |p| {
        if hub && !json {
            download_bar(p)
        }
    })
    .await;
    if hub && !json {
        eprintln!();
    }
    let m = m.map_err(model_error)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        println!(
            "added {} ({}, {} parameters, {}) from {}",
            m.id,
            m.architecture.as_deref().unwrap_or("?"),
            human_params(m.parameter_count),
            human_size(m.size_bytes),
            m.path
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let all: Vec<ModelRecord> = models::list(&store).await.map_err(model_error)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no models yet: add one with `whetstone models add <folder|file.gguf>`");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:<8} {:>8} {:>11}  PATH",
        "ID", "ARCH", "PARAMS", "SIZE"
    );
    for m in all {
        println!(
            "{:<32} {:<8} {:>8} {:>11}  {}",
            m.id,
            m.architecture.as_deref().unwrap_or("-"),
            human_params(m.parameter_count),
            human_size(m.size_bytes),
            m.path
        );
    }
    Ok(ExitCode::SUCCESS)
}
