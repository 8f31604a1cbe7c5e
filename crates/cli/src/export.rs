//! `whetstone export`.

use crate::common::open_store;
use crate::common::UserError;
use crate::common::{data_dir, run_error};
use std::path::PathBuf;
use std::process::ExitCode;
use whetstone_studio::export::{self, ExportFormat, ExportRequest};

pub async fn run(
    run: String,
    format: &str,
    out: Option<PathBuf>,
    checkpoint: Option<String>,
    dtype: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let format: ExportFormat = format.parse().map_err(UserError)?;
    let dir = data_dir()?;
    let store = open_store().await?;
    let req = ExportRequest {
        run,
        format,
        out,
        checkpoint,
        dtype,
    };
    // stages are for a person watching; scripts read the JSON or the one-line error
    let chatty = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = export::export(&store, &dir, req, move |stage| {
        if chatty {
            eprintln!("  {stage}…");
        }
    })
    .await
    .map_err(run_error)?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let bytes: u64 = report.files.iter().map(|f| f.bytes).sum();
    println!(
        "{} export of run {} ({} checkpoint) in {:.1}s: {}",
        report.kind, report.run_id, report.checkpoint, report.seconds, report.path
    );
    for f in &report.files {
        println!(
            "  {:<28} {:>12} bytes  sha256 {}",
            f.name,
            f.bytes,
            &f.sha256[..16]
        );
    }
    println!("  {bytes} bytes in all");
    if let Some(next) = &report.next_step {
        println!("next: {next}");
    }
    Ok(ExitCode::SUCCESS)
}
