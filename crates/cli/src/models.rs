//! `whetstone models add|list`.

use crate::common::{model_error, open_store, UserError};
use std::process::ExitCode;
use whetstone_studio::hub::DownloadProgress;
use whetstone_studio::models::{self, ModelRecord};
use whetstone_studio::DataDir;

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
    let eta = p
        .eta_s
        .map(|s| format!(", {}:{:02} left", (s as u64) / 60, (s as u64) % 60))
        .unwrap_or_default();
    eprint!(
        "\rdownloading [{}{}] {:>5.1}% {:.1}/{:.1} MiB, {}/{} files, {:.1} MiB/s{eta}   ",
        "#".repeat(filled.min(30)),
        " ".repeat(30 - filled.min(30)),
        frac * 100.0,
        p.bytes_done as f64 / (1u64 << 20) as f64,
        p.bytes_total as f64 / (1u64 << 20) as f64,
        p.files_done,
        p.files_total,
        p.bytes_per_s / (1u64 << 20) as f64
    );
}

pub async fn add(reference: &str, copy: bool, json: bool) -> anyhow::Result<ExitCode> {
    let dir = DataDir::locate().map_err(|e| UserError(e.to_string()))?;
    let store = open_store().await?;
    let hub = reference.starts_with("hf:");
    if hub && !json {
        // what is about to happen, before it does
        // (an unreachable hub is the download's business: it may have a complete copy)
        if let Ok(info) = whetstone_studio::hub::model_info(reference, None).await {
            eprintln!(
                "{}: {} files, {:.1} MiB, licence {}{}",
                info.repo,
                info.files.len(),
                info.total_bytes as f64 / (1u64 << 20) as f64,
                info.license.as_deref().unwrap_or("not stated"),
                if info.gated { ", gated" } else { "" }
            );
        }
    }
    let m = models::add_with(&store, &dir.models(), reference, copy, move |p| {
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

pub async fn hub_info(reference: &str, json: bool) -> anyhow::Result<ExitCode> {
    let info = whetstone_studio::hub::model_info(reference, None)
        .await
        .map_err(UserError)?;
    if json {
        println!("{}", serde_json::to_string(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} · licence {} · {} · {:.1} MiB in {} files",
        info.repo,
        info.license.as_deref().unwrap_or("not stated"),
        if info.gated {
            "gated (needs a token)"
        } else {
            "open"
        },
        info.total_bytes as f64 / (1u64 << 20) as f64,
        info.files.len()
    );
    for f in &info.files {
        println!("  {:<40} {:>12} bytes", f.path, f.size);
    }
    Ok(ExitCode::SUCCESS)
}

/// Read a token from stdin (so it never appears in the shell history or a process list).
pub fn hub_login() -> anyhow::Result<ExitCode> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("paste your hub token and press Enter:");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    whetstone_studio::hub::token::store(&line).map_err(UserError)?;
    println!("token stored in the OS keychain");
    Ok(ExitCode::SUCCESS)
}

pub fn hub_logout() -> anyhow::Result<ExitCode> {
    let removed = whetstone_studio::hub::token::remove().map_err(UserError)?;
    println!(
        "{}",
        if removed {
            "token removed"
        } else {
            "no token was stored"
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn curated(device: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let dev = whetstone_studio::methods::pick_device(device).map_err(UserError)?;
    let list = whetstone_studio::curated::curated(&dev);
    if json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let fit = |ok: bool| if ok { "" } else { " (too big here)" };
    println!(
        "memory for one 512-token sequence per step with gradient checkpointing, on {}",
        dev.name
    );
    for m in &list {
        println!(
            "{:<40} {:>6} params · download {:>8} · LoRA {}{} · QLoRA {}{} · {}{}",
            m.reference,
            human_params(Some(m.parameters as i64)),
            gib(m.download_bytes),
            gib(m.lora_bytes),
            fit(m.lora_fits),
            gib(m.qlora_bytes),
            fit(m.qlora_fits),
            m.license,
            if m.gated { ", gated" } else { "" }
        );
        println!("{:<40} {}", "", m.note);
    }
    Ok(ExitCode::SUCCESS)
}
