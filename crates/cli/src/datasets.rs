//! `whetstone datasets add|list|show`.

use crate::common::open_store;
use crate::common::UserError;
use std::path::Path;
use std::process::ExitCode;
use whetstone_studio::datasets::{self, DatasetRecord, DatasetsError};
use whetstone_studio::DatasetFormat;

pub fn datasets_error(e: DatasetsError) -> anyhow::Error {
    match e {
        DatasetsError::Store(s) => anyhow::anyhow!(s),
        other => UserError(other.to_string()).into(),
    }
}

pub async fn add(
    file: &Path,
    format: Option<&str>,
    columns: Option<&str>,
    drop_invalid: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let format = match format {
        Some(f) => Some(DatasetFormat::parse(f).ok_or_else(|| {
            UserError(format!(
                "`--format {f}`: not one of alpaca, chat, sharegpt, text, csv, preference, kto"
            ))
        })?),
        None => None,
    };
    let columns = columns
        .map(datasets::parse_columns)
        .transpose()
        .map_err(UserError)?;
    let store = open_store().await?;
    let (rec, data) = datasets::add(
        &store,
        &crate::common::data_dir()?.datasets(),
        file,
        format,
        columns,
        drop_invalid,
    )
    .await
    .map_err(datasets_error)?;
    if json {
        let mut v = serde_json::to_value(&rec)?;
        v["detected"] = serde_json::json!(data.detected);
        println!("{v}");
    } else {
        println!(
            "{}  {} records, format {}{}",
            rec.id,
            rec.records,
            rec.format,
            if data.detected { " (detected)" } else { "" }
        );
        if rec.dropped > 0 {
            println!("dropped {} invalid record(s):", rec.dropped);
            for p in data.dropped.iter().take(10) {
                println!("  {}: {p}", rec.original_path);
            }
            if data.dropped.len() > 10 {
                println!(
                    "  … and {} more (see `whetstone datasets show {}`)",
                    data.dropped.len() - 10,
                    rec.id
                );
            }
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let all = datasets::list(&store).await.map_err(datasets_error)?;
    if json {
        println!("{}", serde_json::to_string(&all)?);
    } else if all.is_empty() {
        println!("no datasets yet: add one with `whetstone datasets add <file>`");
    } else {
        println!(
            "{:<28} {:<9} {:>8} {:>8}  source",
            "id", "format", "records", "dropped"
        );
        for d in &all {
            println!(
                "{:<28} {:<9} {:>8} {:>8}  {}",
                d.id, d.format, d.records, d.dropped, d.original_path
            );
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn find(store: &whetstone_studio::store::Store, id: &str) -> anyhow::Result<DatasetRecord> {
    datasets::get(store, id)
        .await
        .map_err(datasets_error)?
        .ok_or_else(|| {
            UserError(format!("no dataset `{id}` (see `whetstone datasets list`)")).into()
        })
}

pub async fn show(
    id: &str,
    model: Option<&str>,
    seq_len: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let rec = find(&store, id).await?;
    let model_path = match model {
        Some(m) => Some(
            whetstone_studio::models::resolve(&store, m)
                .await
                .map_err(crate::common::model_error)?,
        ),
        None => None,
    };
    store.close().await;
    let r = rec.clone();
    let report = tokio::task::spawn_blocking(move || {
        whetstone_studio::datasets::inspect(&r, model_path.as_deref(), seq_len, 3)
    })
    .await?
    .map_err(datasets_error)?;
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["dataset"] = serde_json::to_value(&rec)?;
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}  ({})", rec.id, rec.original_path);
    println!(
        "format {} · {} records · {} dropped · {:.1} KiB · sha256 {}",
        rec.format,
        rec.records,
        rec.dropped,
        rec.size_bytes as f64 / 1024.0,
        &rec.sha256[..12]
    );
    for p in &report.problems {
        println!("  dropped: {p}");
    }
    for (i, ex) in report.preview.iter().enumerate() {
        println!("--- example {} ({})", i + 1, ex.at);
        println!("{}", ex.rendered.trim_end());
    }
    if let Some(s) = &report.stats {
        println!(
            "--- tokens with this model's template (seq_len {})",
            s.seq_len
        );
        println!(
            "min {} · mean {:.1} · max {} · {} over seq_len · {} trained tokens in all",
            s.min_tokens, s.mean_tokens, s.max_tokens, s.over_seq_len, s.trained_tokens
        );
        let peak = s.histogram.iter().copied().max().unwrap_or(1).max(1);
        for (i, n) in s.histogram.iter().enumerate() {
            if *n > 0 {
                println!(
                    "{:>6}-{:<6} {:>6} {}",
                    i * s.bin,
                    (i + 1) * s.bin - 1,
                    n,
                    "█".repeat((n * 40).div_ceil(peak))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
