//! `whetstone sweep`, `whetstone soup` and `whetstone runs sweeps|sweep`.

use crate::common::{data_dir, open_store, run_error, UserError};
use std::process::ExitCode;
use whetstone_studio::history::{fmt as opt, RunView};
use whetstone_studio::runs::{self, RunRecord};
use whetstone_studio::soup;
use whetstone_studio::sweep::{self, SweepSpec, SweepView};

#[derive(clap::Args)]
pub struct SweepArgs {
    /// A registered model id, an HF model folder or a .gguf file.
    #[arg(long)]
    pub model: String,
    /// A registered dataset id or a file (registered on the way).
    #[arg(long)]
    pub data: String,
    /// The method every run trains with.
    #[arg(long, default_value = "lora")]
    pub method: String,
    /// A swept key and its values, e.g. lr=1e-4,2e-4 (repeatable: every combination runs).
    #[arg(long = "grid", value_name = "KEY=V1,V2,...")]
    pub grid: Vec<String>,
    /// Random draws from the --range keys (per grid point).
    #[arg(long)]
    pub random: Option<usize>,
    /// A key drawn at random, e.g. lr=1e-5:1e-3:log (repeatable; needs --random).
    #[arg(long = "range", value_name = "KEY=LO:HI[:log]")]
    pub ranges: Vec<String>,
    /// key=value every run gets (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// A name for the sweep in the history.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the runs the sweep would make and stop.
    #[arg(long)]
    pub plan: bool,
    /// NDJSON events, then one line {"sweep", "runs": [...], "best"}.
    #[arg(long)]
    pub json: bool,
}

fn spec_of(a: &SweepArgs) -> anyhow::Result<SweepSpec> {
    let user = |e: String| anyhow::Error::from(UserError(e));
    Ok(SweepSpec {
        name: a.name.clone(),
        model: a.model.clone(),
        data: a.data.clone(),
        method: a.method.clone(),
        sets: a.sets.clone(),
        grid: a
            .grid
            .iter()
            .map(|g| sweep::parse_grid(g))
            .collect::<Result<_, _>>()
            .map_err(user)?,
        random: a.random.unwrap_or(0),
        ranges: a
            .ranges
            .iter()
            .map(|r| sweep::parse_range(r))
            .collect::<Result<_, _>>()
            .map_err(user)?,
    })
}

fn settings_text(s: &std::collections::BTreeMap<String, String>) -> String {
    s.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn sweep(a: SweepArgs) -> anyhow::Result<ExitCode> {
    let spec = spec_of(&a)?;
    if a.plan {
        let base = sweep::base_config(&spec).map_err(UserError)?;
        let planned = sweep::plan(&spec, &base).map_err(UserError)?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({"count": planned.len(), "runs": planned})
            );
        } else {
            println!("{} runs:", planned.len());
            for (i, p) in planned.iter().enumerate() {
                println!("{:>3}. {}", i + 1, settings_text(&p.settings));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dir = data_dir()?;
    dir.ensure().map_err(|e| UserError(e.to_string()))?;
    let store = open_store().await?;
    let view = sweep::create(&store, &dir, &spec)
        .await
        .map_err(run_error)?;
    if !a.json {
        eprintln!(
            "sweep {} · {} · {} runs of {} on {}",
            view.id,
            view.name,
            view.runs.len(),
            spec.method,
            spec.model
        );
    }
    let mut made: Vec<RunRecord> = vec![];
    for r in &view.runs {
        made.push(
            runs::get(&store, &r.id)
                .await
                .map_err(run_error)?
                .ok_or_else(|| UserError(format!("run {} vanished", r.id)))?,
        );
    }
    let label = |r: &RunRecord| {
        r.settings
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .map(|s: std::collections::BTreeMap<String, String>| settings_text(&s))
            .unwrap_or_else(|| r.method.clone())
    };
    let code = crate::train::execute_queued(&store, &made, a.json, &label).await?;
    let view = sweep::show(&store, &view.id).await.map_err(run_error)?;
    store.close().await;
    print_sweep(&view, a.json)?;
    Ok(code)
}

/// The runs sorted by best eval loss (those without one last).
fn ranked(view: &SweepView) -> Vec<&RunView> {
    let mut runs: Vec<&RunView> = view.runs.iter().collect();
    runs.sort_by(|a, b| {
        a.best_eval_loss
            .unwrap_or(f64::INFINITY)
            .total_cmp(&b.best_eval_loss.unwrap_or(f64::INFINITY))
    });
    runs
}

fn print_sweep(view: &SweepView, json: bool) -> anyhow::Result<()> {
    let runs = ranked(view);
    if json {
        let rows: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.id,
                    "settings": r.settings,
                    "status": r.status,
                    "best_eval_loss": r.best_eval_loss,
                    "first_eval_loss": r.first_eval_loss,
                    "final_train_loss": r.final_train_loss,
                    "tokens_per_s": r.tokens_per_s,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "sweep": {"id": view.id, "name": view.name, "keys": view.keys, "spec": view.spec},
                "runs": rows,
                "best": view.best,
            })
        );
        return Ok(());
    }
    println!("{} · {}", view.id, view.name);
    println!(
        "{:<4} {:<8} {:<10} {:>10} {:>10}  settings",
        "#", "run", "status", "best eval", "tokens/s"
    );
    for (i, r) in runs.iter().enumerate() {
        println!(
            "{:<4} {:<8} {:<10} {:>10} {:>10}  {}",
            i + 1,
            r.id,
            r.status.to_string(),
            opt(r.best_eval_loss, 4),
            opt(r.tokens_per_s, 1),
            r.settings.as_ref().map(settings_text).unwrap_or_default()
        );
    }
    if let Some(best) = &view.best {
        let ids: Vec<&str> = runs
            .iter()
            .filter(|r| r.best_eval_loss.is_some())
            .take(3)
            .map(|r| r.id.as_str())
            .collect();
        println!(
            "best: {best} · average the best into one model: whetstone soup {} --greedy",
            ids.join(" ")
        );
    }
    Ok(())
}

pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let sweeps = sweep::list(&store).await.map_err(run_error)?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string(&sweeps)?);
        return Ok(ExitCode::SUCCESS);
    }
    if sweeps.is_empty() {
        println!("no sweeps yet: start one with `whetstone sweep --grid KEY=v1,v2 ...`");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<9} {:<32} {:>9} {:<8} {:>10}  created",
        "id", "name", "finished", "best", "best eval"
    );
    for s in sweeps {
        println!(
            "{:<9} {:<32} {:>9} {:<8} {:>10}  {}",
            s.id,
            s.name.chars().take(32).collect::<String>(),
            format!("{}/{}", s.finished, s.runs),
            s.best.as_deref().unwrap_or("-"),
            opt(s.best_eval_loss, 4),
            s.created_at.get(..16).unwrap_or(&s.created_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let view = sweep::show(&store, id).await.map_err(run_error)?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        print_sweep(&view, false)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn soup(ids: &[String], greedy: bool, json: bool) -> anyhow::Result<ExitCode> {
    let dir = data_dir()?;
    dir.ensure().map_err(|e| UserError(e.to_string()))?;
    let store = open_store().await?;
    let report = soup::make(&store, &dir, ids, greedy, move |line| {
        if !json {
            eprintln!("{line}");
        }
    })
    .await
    .map_err(run_error)?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} soup {} · eval loss {:.4} (base {:.4}) · {:.1}s",
        report.recipe, report.run_id, report.eval_loss, report.base_eval_loss, report.seconds
    );
    for i in &report.ingredients {
        println!(
            "  {:<8} eval loss {:.4}  {}",
            i.run_id,
            i.eval_loss,
            if i.used {
                format!("in (weight {:.3}, {} checkpoint)", i.weight, i.checkpoint)
            } else {
                "left out (made the soup worse)".into()
            }
        );
    }
    println!(
        "export it like any run: whetstone export {} --format peft",
        report.run_id
    );
    Ok(ExitCode::SUCCESS)
}
