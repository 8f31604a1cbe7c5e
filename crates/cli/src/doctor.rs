//! `whetstone doctor [--json]`.

use crate::common::UserError;
use std::process::ExitCode;
use whetstone_studio::{doctor, DataDir, DoctorReport};

pub async fn run(json: bool) -> anyhow::Result<ExitCode> {
    let dir = DataDir::locate().map_err(|e| UserError(e.to_string()))?;
    let report = doctor(&dir).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    // The report itself always prints; a broken data directory is still a failure to fix.
    Ok(if report.data_dir_error.is_some() || !report.database.ok {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn print_text(r: &DoctorReport) {
    println!("Whetstone {} ({}/{})", r.version, r.os, r.arch);
    let libs: Vec<String> = r
        .libraries
        .iter()
        .map(|l| format!("{} {}", l.name, l.version))
        .collect();
    println!("  libraries     {}", libs.join(", "));
    let feats = if r.compiled_features.is_empty() {
        "none (CPU only)".to_string()
    } else {
        r.compiled_features.join(", ")
    };
    println!("  features      {feats}");
    println!("devices");
    for d in &r.devices {
        let mark = if d.available { "ok " } else { "-- " };
        let mut line = format!("  {mark} {}:{} {}", d.kind.as_str(), d.ordinal, d.name);
        if let Some(t) = d.threads {
            line += &format!(", {t} threads");
        }
        if let Some(m) = d.memory_bytes {
            line += &format!(", {}", gib(m));
        }
        if !d.features.is_empty() {
            line += &format!(" [{}]", d.features.join(" "));
        }
        println!("{line}");
        if let Some(n) = &d.note {
            println!("       {n}");
        }
    }
    println!("data directory  {}", r.data_dir);
    if let Some(e) = &r.data_dir_error {
        println!("  problem: {e}");
    }
    let db = &r.database;
    if db.ok {
        println!(
            "  database      {} (schema v{}, {} journal, {} models)",
            db.path,
            db.schema_version.unwrap_or(0),
            db.journal_mode.as_deref().unwrap_or("?"),
            db.models_registered.unwrap_or(0)
        );
    } else {
        println!(
            "  database      {} — {}",
            db.path,
            db.error.as_deref().unwrap_or("unavailable")
        );
    }
    let m = &r.demo_model;
    let state = match (m.present, m.sha256_ok) {
        (false, _) => "missing — run `./dev setup` to fetch it".to_string(),
        (true, Some(true)) => format!(
            "ok ({}, {} tensors, sha256 verified)",
            m.architecture.as_deref().unwrap_or("?"),
            m.tensor_count.unwrap_or(0)
        ),
        (true, _) => format!(
            "damaged — {}",
            m.problem.as_deref().unwrap_or("unknown problem")
        ),
    };
    println!("demo model      {}\n  {state}", m.path);
}
