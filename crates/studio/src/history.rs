//! Run history: list, show, compare and delete runs, and recover runs a crash left behind.

use crate::run_state::RunState;
use crate::runs::{get, pid_alive, RunError, RunRecord};
use crate::store::Store;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `runs show --json`: the fields docs/design.md#run-history promises, then more.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct RunView {
    pub id: String,
    pub status: RunState,
    pub method: String,
    pub model: String,
    pub dataset: String,
    #[ts(as = "whetstone_engine::TrainConfig")]
    pub config: Value,
    pub steps_done: i64,
    pub best_eval_loss: Option<f64>,
    pub final_train_loss: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub peak_mem_bytes: Option<i64>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub total_steps: Option<i64>,
    pub first_eval_loss: Option<f64>,
    pub last_eval_loss: Option<f64>,
    pub trainable_params: Option<u64>,
    pub total_params: Option<u64>,
    pub elapsed_s: Option<f64>,
    pub adapter_bytes: Option<u64>,
    pub run_dir: String,
    pub error: Option<String>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub dataset_sha256: Option<String>,
    pub app_version: Option<String>,
    /// `train`, or `soup` (its recipe in `soup`).
    pub kind: String,
    /// The sweep the run belongs to, and the settings it swept (key -> value).
    pub sweep_id: Option<String>,
    pub settings: Option<std::collections::BTreeMap<String, String>>,
    pub soup: Option<crate::soup::SoupRecipe>,
    /// Its last task evaluation (`whetstone evaluate`): base vs tuned, per metric.
    pub task_metrics: Vec<crate::task_eval::MetricPair>,
}

fn dir_size(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
    )
}

impl RunView {
    pub fn from_record(r: &RunRecord) -> Self {
        let summary: Value = r
            .summary
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let ckpt = PathBuf::from(&r.run_dir).join("checkpoints");
        let adapter_bytes = ["best", "last"].iter().find_map(|n| {
            let d = ckpt.join(n);
            d.join("state.json")
                .exists()
                .then(|| dir_size(&d))
                .flatten()
        });
        Self {
            id: r.id.clone(),
            status: r.status,
            method: r.method.clone(),
            model: r.model_id.clone().unwrap_or_else(|| r.model_path.clone()),
            dataset: r.dataset_id.clone(),
            config: serde_json::from_str(&r.config).unwrap_or(Value::Null),
            steps_done: r.steps_done,
            best_eval_loss: r.best_eval_loss,
            final_train_loss: r.final_train_loss,
            tokens_per_s: r.tokens_per_s,
            peak_mem_bytes: r.peak_mem_bytes,
            created_at: r.created_at.clone(),
            finished_at: r.finished_at.clone(),
            total_steps: r.total_steps,
            first_eval_loss: summary["first_eval_loss"].as_f64(),
            last_eval_loss: summary["last_eval_loss"].as_f64(),
            trainable_params: summary["trainable_params"].as_u64(),
            total_params: summary["total_params"].as_u64(),
            elapsed_s: summary["elapsed_s"].as_f64(),
            adapter_bytes,
            run_dir: r.run_dir.clone(),
            error: r.error.clone(),
            tags: vec![],
            notes: r.notes.clone(),
            dataset_sha256: r.dataset_sha256.clone(),
            app_version: r.app_version.clone(),
            kind: r.kind.clone(),
            sweep_id: r.sweep_id.clone(),
            settings: r
                .settings
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            soup: r.soup.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            task_metrics: vec![],
        }
    }
}

/// A number with `digits` decimals, or `-` when there is none.
pub fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// One row of a comparison table: its label and how a run's value is written.
pub type MetricRow = (&'static str, fn(&RunView) -> String);

/// The rows `runs compare` prints and `runs report` tabulates, in order.
pub fn metric_rows() -> Vec<MetricRow> {
    vec![
        ("status", |r| r.status.to_string()),
        ("kind", |r| match &r.soup {
            Some(s) => format!(
                "{} soup of {}",
                s.recipe,
                s.ingredients.iter().filter(|i| i.used).count()
            ),
            None => r.kind.clone(),
        }),
        ("method", |r| r.method.clone()),
        ("model", |r| r.model.clone()),
        ("dataset", |r| r.dataset.clone()),
        ("steps", |r| r.steps_done.to_string()),
        ("eval loss before", |r| fmt(r.first_eval_loss, 4)),
        ("best eval loss", |r| fmt(r.best_eval_loss, 4)),
        ("final eval loss", |r| fmt(r.last_eval_loss, 4)),
        ("best perplexity", |r| {
            fmt(r.best_eval_loss.map(f64::exp), 3)
        }),
        ("final train loss", |r| fmt(r.final_train_loss, 4)),
        ("trainable params", |r| {
            r.trainable_params.map_or("-".into(), |n| n.to_string())
        }),
        ("peak memory MiB", |r| {
            r.peak_mem_bytes
                .map_or("-".into(), |b| format!("{:.0}", b as f64 / 1048576.0))
        }),
        ("tokens/s", |r| fmt(r.tokens_per_s, 1)),
        ("wall time s", |r| fmt(r.elapsed_s, 1)),
        ("adapter KiB", |r| {
            r.adapter_bytes
                .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1024.0))
        }),
    ]
}

/// Runs the database says are running but whose process is gone (killed, crashed, power
/// cut) become `interrupted`, which `resume` accepts. Returns their ids.
pub async fn recover_interrupted(store: &Store) -> Result<Vec<String>, RunError> {
    let running: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT id, pid FROM runs WHERE status = ?")
            .bind(RunState::Running)
            .fetch_all(store.pool())
            .await?;
    let mut out = vec![];
    for (id, pid) in running {
        // Only Linux can tell here whether another process still runs it; elsewhere a run
        // is left alone unless this process started it.
        let gone = match pid {
            Some(p) if cfg!(target_os = "linux") => !pid_alive(p),
            Some(p) => p == std::process::id() as i64,
            None => true,
        };
        if gone {
            sqlx::query("UPDATE runs SET status = ?, pid = NULL WHERE id = ? AND status = ?")
                .bind(RunState::Interrupted)
                .bind(&id)
                .bind(RunState::Running)
                .execute(store.pool())
                .await?;
            out.push(id);
        }
    }
    Ok(out)
}

/// A view with its tags.
async fn view(store: &Store, r: &RunRecord) -> Result<RunView, RunError> {
    let mut v = RunView::from_record(r);
    v.tags = sqlx::query_scalar("SELECT tag FROM run_tags WHERE run_id = ? ORDER BY tag")
        .bind(&r.id)
        .fetch_all(store.pool())
        .await?;
    v.task_metrics = crate::task_eval::stored(store, Some(&r.id))
        .await?
        .remove(&r.id)
        .unwrap_or_default();
    Ok(v)
}

pub async fn list(store: &Store) -> Result<Vec<RunView>, RunError> {
    let rows: Vec<RunRecord> =
        sqlx::query_as("SELECT * FROM runs ORDER BY CAST(substr(id, 5) AS INTEGER)")
            .fetch_all(store.pool())
            .await?;
    // every run's tags in one query, not one per run
    let pairs: Vec<(String, String)> =
        sqlx::query_as("SELECT run_id, tag FROM run_tags ORDER BY tag")
            .fetch_all(store.pool())
            .await?;
    let mut tags: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (id, tag) in pairs {
        tags.entry(id).or_default().push(tag);
    }
    let mut task = crate::task_eval::stored(store, None).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut v = RunView::from_record(r);
            v.tags = tags.remove(&r.id).unwrap_or_default();
            v.task_metrics = task.remove(&r.id).unwrap_or_default();
            v
        })
        .collect())
}

/// What another client can ask of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Checkpoint and stop; the run shows as `paused` and `resume` continues it.
    Pause,
    /// Checkpoint and stop; the run shows as `cancelled` (`resume` still continues it).
    Stop,
}

/// Ask for a pause or stop. A run training in a live process is told through the database
/// (it acts within a step); a queued or interrupted run changes status at once.
pub async fn request(store: &Store, id: &str, what: Control) -> Result<RunView, RunError> {
    let r = require(store, id).await?;
    let word = match what {
        Control::Pause => "pause",
        Control::Stop => "stop",
    };
    match r.status {
        RunState::Running if r.pid.is_some_and(pid_alive) => {
            sqlx::query("UPDATE runs SET control = ? WHERE id = ? AND status = ?")
                .bind(word)
                .bind(id)
                .bind(RunState::Running)
                .execute(store.pool())
                .await?;
        }
        RunState::Queued | RunState::Interrupted | RunState::Paused | RunState::Running => {
            let status = if what == Control::Pause {
                RunState::Paused
            } else {
                RunState::Cancelled
            };
            // only if nothing changed it meanwhile (a worker starting it, say)
            sqlx::query(
                "UPDATE runs SET status = ?, control = NULL, pid = NULL WHERE id = ? AND status = ?",
            )
            .bind(status)
            .bind(id)
            .bind(r.status)
            .execute(store.pool())
            .await?;
        }
        other => {
            return Err(RunError::User(format!(
                "run {id} is {other}: there is nothing to {word}"
            )))
        }
    }
    view(store, &require(store, id).await?).await
}

/// Add (`add = true`) or remove tags. Tags are trimmed, non-empty, without commas.
pub async fn tag(store: &Store, id: &str, tags: &[String], add: bool) -> Result<RunView, RunError> {
    let r = require(store, id).await?;
    if let Some(bad) = tags
        .iter()
        .map(|t| t.trim())
        .find(|t| t.is_empty() || t.contains(',') || t.chars().count() > 64)
    {
        return Err(RunError::User(format!(
            "tag `{bad}`: tags are 1 to 64 characters without commas"
        )));
    }
    for t in tags {
        let t = t.trim();
        let q = if add {
            "INSERT OR IGNORE INTO run_tags (run_id, tag) VALUES (?, ?)"
        } else {
            "DELETE FROM run_tags WHERE run_id = ? AND tag = ?"
        };
        sqlx::query(q)
            .bind(id)
            .bind(t)
            .execute(store.pool())
            .await?;
    }
    view(store, &r).await
}

/// Set a run's free-text notes (empty text clears them).
pub async fn note(store: &Store, id: &str, text: &str) -> Result<RunView, RunError> {
    require(store, id).await?;
    let text = text.trim();
    sqlx::query("UPDATE runs SET notes = ? WHERE id = ?")
        .bind((!text.is_empty()).then_some(text))
        .bind(id)
        .execute(store.pool())
        .await?;
    view(store, &require(store, id).await?).await
}

/// The run `id`, or the user error naming it.
async fn require(store: &Store, id: &str) -> Result<RunRecord, RunError> {
    get(store, id)
        .await?
        .ok_or_else(|| RunError::User(format!("no run `{id}` (see `whetstone runs list`)")))
}

pub async fn show(store: &Store, id: &str) -> Result<RunView, RunError> {
    view(store, &require(store, id).await?).await
}

/// `(step, value)` pairs of one curve: `kind` is `train` or `eval`.
pub async fn curve(store: &Store, id: &str, kind: &str) -> Result<Vec<(i64, f64)>, RunError> {
    Ok(sqlx::query_as(
        "SELECT step, loss FROM run_metrics WHERE run_id = ? AND kind = ? AND loss IS NOT NULL ORDER BY step",
    )
    .bind(id)
    .bind(kind)
    .fetch_all(store.pool())
    .await?)
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct Curves {
    /// `(step, loss)`.
    pub train: Vec<(i64, f64)>,
    pub eval: Vec<(i64, f64)>,
    /// The same curves by tokens trained on: `(tokens, loss)` (an eval counts the tokens of
    /// the step it followed; the first, before any update, is at 0).
    pub train_by_tokens: Vec<(i64, f64)>,
    pub eval_by_tokens: Vec<(i64, f64)>,
}

/// How curves are aligned across runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Step,
    Tokens,
}

impl std::str::FromStr for Axis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "step" | "steps" => Ok(Axis::Step),
            "tokens" => Ok(Axis::Tokens),
            other => Err(format!("--by: `{other}` is not `step` or `tokens`")),
        }
    }
}

/// `(tokens, loss)` pairs of one curve, tokens from the train row of the same step.
pub async fn curve_by_tokens(
    store: &Store,
    id: &str,
    kind: &str,
) -> Result<Vec<(i64, f64)>, RunError> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(t.tokens, 0), m.loss FROM run_metrics m
         LEFT JOIN run_metrics t ON t.run_id = m.run_id AND t.kind = 'train' AND t.step = m.step
         WHERE m.run_id = ? AND m.kind = ? AND m.loss IS NOT NULL
           AND (t.tokens IS NOT NULL OR m.step = 0) ORDER BY m.step",
    )
    .bind(id)
    .bind(kind)
    .fetch_all(store.pool())
    .await?)
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct Comparison {
    pub runs: Vec<RunView>,
    /// Per run, in the same order: curves by optimizer step.
    pub curves: Vec<Curves>,
}

pub async fn compare(store: &Store, ids: &[String]) -> Result<Comparison, RunError> {
    if ids.len() < 2 {
        return Err(RunError::User("compare needs at least two run ids".into()));
    }
    let mut runs = vec![];
    let mut curves = vec![];
    for id in ids {
        runs.push(show(store, id).await?);
        curves.push(Curves {
            train: curve(store, id, "train").await?,
            eval: curve(store, id, "eval").await?,
            train_by_tokens: curve_by_tokens(store, id, "train").await?,
            eval_by_tokens: curve_by_tokens(store, id, "eval").await?,
        });
    }
    Ok(Comparison { runs, curves })
}

/// Delete a run: its rows (metrics and events cascade) and its folder. A run that another
/// process is still training is refused.
pub async fn delete(store: &Store, id: &str) -> Result<RunView, RunError> {
    let r = require(store, id).await?;
    if r.status == RunState::Running && r.pid.is_some_and(pid_alive) {
        return Err(RunError::User(format!(
            "run {id} is still running (process {}); stop it first",
            r.pid.unwrap_or(0)
        )));
    }
    let view = RunView::from_record(&r);
    sqlx::query("DELETE FROM runs WHERE id = ?")
        .bind(id)
        .execute(store.pool())
        .await?;
    let dir = PathBuf::from(&r.run_dir);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| RunError::User(format!("{}: cannot remove: {e}", dir.display())))?;
    }
    Ok(view)
}

/// Every train metric of a run as columns (row `i` of each is one step): the layout chart
/// libraries take without copying.
#[derive(Debug, Clone, Default, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct TrainSeries {
    pub step: Vec<f64>,
    pub loss: Vec<Option<f64>>,
    pub lr: Vec<Option<f64>>,
    pub grad_norm: Vec<Option<f64>>,
    pub tokens_per_s: Vec<Option<f64>>,
    pub mem_bytes: Vec<Option<f64>>,
    pub tokens: Vec<Option<f64>>,
    /// Seconds of training when the step was recorded (summed across resumes).
    pub time_s: Vec<Option<f64>>,
}

/// Eval metrics as columns; `tokens` and `time_s` are those of the step evaluated after.
#[derive(Debug, Clone, Default, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct EvalSeries {
    pub step: Vec<f64>,
    pub loss: Vec<Option<f64>>,
    pub perplexity: Vec<Option<f64>>,
    pub tokens: Vec<Option<f64>>,
    pub time_s: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct SampleView {
    pub step: i64,
    pub prompt: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct LogLine {
    pub step: i64,
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct CheckpointView {
    pub step: i64,
    pub path: String,
    pub best: bool,
}

/// Everything a run screen draws: the run, its metric columns, samples, logs, checkpoints.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct RunMetrics {
    pub run: RunView,
    pub train: TrainSeries,
    pub eval: EvalSeries,
    /// The objective's metrics beyond the loss, by name (`token_accuracy`, ...).
    pub named: Vec<NamedSeries>,
    pub samples: Vec<SampleView>,
    pub logs: Vec<LogLine>,
    pub checkpoints: Vec<CheckpointView>,
}

/// One named metric of a run: its train and eval points.
#[derive(Debug, Clone, Default, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct NamedSeries {
    pub name: String,
    pub train_step: Vec<f64>,
    pub train: Vec<f64>,
    pub eval_step: Vec<f64>,
    pub eval: Vec<f64>,
}

/// Every named metric of run `id`, by name.
pub async fn named_metrics(store: &Store, id: &str) -> Result<Vec<NamedSeries>, RunError> {
    let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
        "SELECT name, kind, step, value FROM run_metric_values WHERE run_id = ? ORDER BY name, kind, step",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    let mut out: Vec<NamedSeries> = vec![];
    for (name, kind, step, value) in rows {
        if out.last().is_none_or(|s| s.name != name) {
            out.push(NamedSeries {
                name: name.clone(),
                ..NamedSeries::default()
            });
        }
        let s = out.last_mut().expect("pushed above");
        if kind == "eval" {
            s.eval_step.push(step as f64);
            s.eval.push(value);
        } else {
            s.train_step.push(step as f64);
            s.train.push(value);
        }
    }
    Ok(out)
}

type MetricRowDb = (
    String,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
);

pub async fn metrics(store: &Store, id: &str) -> Result<RunMetrics, RunError> {
    let run = show(store, id).await?;
    // An eval takes the tokens and time of the train step it followed (0 before any).
    let rows: Vec<MetricRowDb> = sqlx::query_as(
        "SELECT m.kind, m.step, m.loss, m.lr, m.grad_norm, m.tokens_per_s, m.mem_bytes,
                COALESCE(m.tokens, t.tokens, CASE WHEN m.step = 0 THEN 0 END),
                COALESCE(m.time_s, t.time_s), m.perplexity
         FROM run_metrics m
         LEFT JOIN run_metrics t ON t.run_id = m.run_id AND t.kind = 'train' AND t.step = m.step
                                 AND m.kind = 'eval'
         WHERE m.run_id = ? ORDER BY m.kind, m.step",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    let mut train = TrainSeries::default();
    let mut eval = EvalSeries::default();
    for (kind, step, loss, lr, grad_norm, tps, mem, tokens, time_s, ppl) in rows {
        let tokens = tokens.map(|t| t as f64);
        if kind == "train" {
            train.step.push(step as f64);
            train.loss.push(loss);
            train.lr.push(lr);
            train.grad_norm.push(grad_norm);
            train.tokens_per_s.push(tps);
            train.mem_bytes.push(mem.map(|m| m as f64));
            train.tokens.push(tokens);
            train.time_s.push(time_s);
        } else {
            eval.step.push(step as f64);
            eval.loss.push(loss);
            eval.perplexity.push(ppl);
            eval.tokens.push(tokens);
            eval.time_s.push(time_s);
        }
    }
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, payload FROM run_events WHERE run_id = ? AND kind IN ('sample', 'log', 'checkpoint') ORDER BY seq",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    let (mut samples, mut logs, mut checkpoints) = (vec![], vec![], vec![]);
    for (kind, payload) in events {
        let v: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        let step = v["step"].as_i64().unwrap_or(0);
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "sample" => samples.push(SampleView {
                step,
                prompt: text("prompt"),
                text: text("text"),
            }),
            "log" => logs.push(LogLine {
                step,
                level: text("level"),
                message: text("message"),
            }),
            _ => checkpoints.push(CheckpointView {
                step,
                path: text("path"),
                best: v["best"].as_bool().unwrap_or(false),
            }),
        }
    }
    let named = named_metrics(store, id).await?;
    Ok(RunMetrics {
        run,
        train,
        eval,
        named,
        samples,
        logs,
        checkpoints,
    })
}
