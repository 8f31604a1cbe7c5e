//! `whetstone runs list|show|compare|delete`.

use crate::common::{open_store, run_error};
use std::process::ExitCode;
use whetstone_studio::history::{self, fmt as opt, RunView};

fn mib(v: Option<i64>) -> String {
    v.map(|b| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64))
        .unwrap_or_else(|| "-".into())
}

pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let runs = history::list(&store).await.map_err(run_error)?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs yet: start one with `whetstone train` or `whetstone demo`");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:<12} {:<7} {:<28} {:<24} {:>11} {:>10}  {:<16}  group",
        "id", "status", "method", "model", "dataset", "steps", "best eval", "created"
    );
    for r in &runs {
        println!(
            "{:<8} {:<12} {:<7} {:<28} {:<24} {:>11} {:>10}  {:<16}  {}",
            r.id,
            r.status,
            r.method,
            r.model.chars().take(28).collect::<String>(),
            r.dataset.chars().take(24).collect::<String>(),
            format!(
                "{}/{}",
                r.steps_done,
                r.total_steps.map_or("?".into(), |t| t.to_string())
            ),
            opt(r.best_eval_loss, 4),
            r.created_at.get(..16).unwrap_or(&r.created_at),
            match (&r.soup, &r.sweep_id) {
                (Some(s), _) => format!(
                    "{} soup of {}",
                    s.recipe,
                    s.ingredients
                        .iter()
                        .filter(|i| i.used)
                        .map(|i| i.run_id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                (None, Some(sweep)) => sweep.clone(),
                (None, None) => String::new(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_view(r: &RunView) {
    println!(
        "{}  {} · {} on {} · data {}",
        r.id, r.status, r.method, r.model, r.dataset
    );
    println!(
        "steps {}/{} · eval loss {} → {} (best {}) · final train loss {}",
        r.steps_done,
        r.total_steps.map_or("?".into(), |t| t.to_string()),
        opt(r.first_eval_loss, 4),
        opt(r.last_eval_loss, 4),
        opt(r.best_eval_loss, 4),
        opt(r.final_train_loss, 4)
    );
    println!(
        "{} tokens/s · peak memory {} · {} trainable of {} parameters · {}s",
        opt(r.tokens_per_s, 1),
        mib(r.peak_mem_bytes),
        r.trainable_params.map_or("?".into(), |n| n.to_string()),
        r.total_params.map_or("?".into(), |n| n.to_string()),
        opt(r.elapsed_s, 1)
    );
    println!(
        "created {} · finished {}",
        r.created_at,
        r.finished_at.as_deref().unwrap_or("-")
    );
    println!("folder {}", r.run_dir);
    if let Some(e) = &r.error {
        println!("error: {e}");
    }
    if !r.tags.is_empty() {
        println!("tags: {}", r.tags.join(", "));
    }
    if let Some(n) = &r.notes {
        println!("notes: {n}");
    }
    if !r.task_metrics.is_empty() {
        let figures: Vec<String> = r
            .task_metrics
            .iter()
            .map(|m| format!("{} {:.3} → {:.3}", m.metric.as_str(), m.base, m.tuned))
            .collect();
        println!("task metrics (base → tuned): {}", figures.join(" · "));
    }
    if r.status.is_resumable() {
        println!("continue with: whetstone resume {}", r.id);
    }
}

/// Print a view as JSON, or call `text` with it.
fn emit(r: &RunView, json: bool, text: impl FnOnce(&RunView)) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        text(r);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn control(id: &str, what: history::Control, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let r = history::request(&store, id, what)
        .await
        .map_err(run_error)?;
    store.close().await;
    emit(&r, json, |r| {
        if r.status == whetstone_studio::RunState::Running {
            println!(
                "asked the process training {} to checkpoint and stop after this step",
                r.id
            );
        } else {
            println!("{} is now {}", r.id, r.status);
        }
    })
}

pub async fn tag(id: &str, tags: &[String], add: bool, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let r = history::tag(&store, id, tags, add)
        .await
        .map_err(run_error)?;
    store.close().await;
    emit(&r, json, |r| {
        println!("{} tags: {}", r.id, r.tags.join(", "))
    })
}

pub async fn note(id: &str, text: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let r = history::note(&store, id, text).await.map_err(run_error)?;
    store.close().await;
    emit(&r, json, |r| {
        println!("{} notes: {}", r.id, r.notes.as_deref().unwrap_or("-"))
    })
}

pub async fn show(id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let r = history::show(&store, id).await.map_err(run_error)?;
    store.close().await;
    emit(&r, json, print_view)
}

pub async fn compare(ids: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let c = history::compare(&store, ids).await.map_err(run_error)?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string(&c)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{:<18}", "");
    for r in &c.runs {
        print!(" {:>20}", r.id);
    }
    println!();
    for (name, value) in history::metric_rows() {
        print!("{name:<18}");
        for r in &c.runs {
            let v: String = value(r).chars().take(20).collect();
            print!(" {v:>20}");
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn delete(id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let r = history::delete(&store, id).await.map_err(run_error)?;
    store.close().await;
    emit(&r, json, |r| println!("deleted {} and {}", r.id, r.run_dir))
}

pub async fn report(
    ids: &[String],
    out: &std::path::Path,
    by: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let axis: history::Axis = by.parse().map_err(crate::common::UserError)?;
    let store = open_store().await?;
    let c = history::compare(&store, ids).await.map_err(run_error)?;
    store.close().await;
    let out = out.to_path_buf();
    let r = tokio::task::spawn_blocking(move || whetstone_studio::report::write(&c, &out, axis))
        .await?
        .map_err(crate::common::UserError)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("wrote {}", r.markdown.display());
        for c in &r.charts {
            println!("  {}", c.display());
        }
        for s in &r.skipped {
            eprintln!("warning: chart not drawn: {s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
