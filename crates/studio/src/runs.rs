//! Training runs: create one from a model, a dataset and a config; execute it on its own
//! thread; persist its events to SQLite in batches while forwarding them to the caller
//! (progress bar, NDJSON, the window); resume it from its last checkpoint.

use crate::datasets::{self, DatasetRecord, DatasetsError};
use crate::models::{self, ModelError};
use crate::paths::{write_atomically, DataDir};
use crate::store::{Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use whetstone_data::{tokenize_example, ChatTemplate, Dataset, Tokenized};
use whetstone_engine::train::{find_checkpoint, TrainData, TrainSpec};
use whetstone_engine::{Summary, TrainConfig, TrainEvent};
use whetstone_formats::ModelSource;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Something the user can fix: a file, a field, a setting.
    #[error("{0}")]
    User(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RunError {
    fn from(e: sqlx::Error) -> Self {
        RunError::Store(e.into())
    }
}

impl From<ModelError> for RunError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Store(s) => RunError::Store(s),
            other => RunError::User(other.to_string()),
        }
    }
}

impl From<DatasetsError> for RunError {
    fn from(e: DatasetsError) -> Self {
        match e {
            DatasetsError::Store(s) => RunError::Store(s),
            other => RunError::User(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRecord {
    pub id: String,
    pub status: crate::run_state::RunState,
    pub method: String,
    pub model_id: Option<String>,
    pub model_path: String,
    pub dataset_id: String,
    pub config: String,
    pub run_dir: String,
    pub pid: Option<i64>,
    pub steps_done: i64,
    pub total_steps: Option<i64>,
    pub best_eval_loss: Option<f64>,
    pub final_train_loss: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub peak_mem_bytes: Option<i64>,
    pub summary: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// A pause or stop another client asked for, not yet acted on.
    pub control: Option<String>,
    pub notes: Option<String>,
    /// sha256 of the dataset file the run was made with.
    pub dataset_sha256: Option<String>,
    pub app_version: Option<String>,
    /// `train`, or `soup` for a model soup of other runs.
    pub kind: String,
    /// The sweep the run belongs to.
    pub sweep_id: Option<String>,
    /// A sweep run's swept settings (JSON object, key -> value).
    pub settings: Option<String>,
    /// A soup's recipe and ingredients (JSON, [`crate::soup::SoupRecipe`]).
    pub soup: Option<String>,
}

impl RunRecord {
    pub fn config(&self) -> Result<TrainConfig, RunError> {
        serde_json::from_str(&self.config)
            .map_err(|e| RunError::Internal(format!("run {}: stored config: {e}", self.id)))
    }
}

/// The run config both front ends build: the defaults, then a TOML file's keys (`toml`:
/// its text and where it came from, for errors), then the method, then each `key=value`
/// pair in order. It runs on the best device this machine has unless a setting names one.
pub fn build_config(
    method: Option<&str>,
    toml: Option<(&str, &str)>,
    pairs: &[String],
) -> Result<TrainConfig, String> {
    let mut cfg = TrainConfig::default();
    // empty until a setting names a device
    cfg.device.clear();
    if let Some((text, origin)) = toml {
        cfg.apply_toml(text, origin)?;
    }
    if let Some(m) = method {
        cfg.set_method(whetstone_engine::MethodKind::parse(m)?);
    }
    for p in pairs {
        cfg.set_pair(p).map_err(|e| format!("{p}: {e}"))?;
    }
    if cfg.device.trim().is_empty() {
        cfg.device = crate::methods::pick_device(None)?.label();
    }
    Ok(cfg)
}

/// What a new run is made of.
pub struct NewRun {
    pub model: String,
    pub data: String,
    pub config: TrainConfig,
}

pub async fn get(store: &Store, id: &str) -> Result<Option<RunRecord>, RunError> {
    Ok(
        sqlx::query_as::<_, RunRecord>("SELECT * FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(store.pool())
            .await?,
    )
}

/// Validate the pieces and register the run (status `queued`), with `run.json` in its folder.
pub async fn create(store: &Store, dir: &DataDir, req: NewRun) -> Result<RunRecord, RunError> {
    let model_path = models::resolve(store, &req.model).await?;
    let model_id = models::get(store, &req.model).await?.map(|m| m.id);
    whetstone_engine::candle_device(&req.config.device).map_err(RunError::User)?;
    let dataset = datasets::resolve(store, &dir.datasets(), &req.data).await?;
    // Everything that can be wrong with the input is found before anything is written.
    let (mp, ds, cfg) = (model_path.clone(), dataset.clone(), req.config.clone());
    tokio::task::spawn_blocking(move || -> Result<(), RunError> {
        let source = ModelSource::open(&mp).map_err(|e| RunError::User(e.to_string()))?;
        cfg.validate(&source.config).map_err(RunError::User)?;
        let data = ds.load()?;
        prepare_data(&source, &data, &ds.original_path, &cfg, &mut vec![])?;
        Ok(())
    })
    .await
    .map_err(|e| RunError::Internal(e.to_string()))??;
    let config =
        serde_json::to_string(&req.config).map_err(|e| RunError::Internal(e.to_string()))?;
    let id = insert_row(
        store,
        dir,
        &RunRow {
            kind: "train",
            method: req.config.method.as_str(),
            model_id: &model_id,
            model_path: &model_path,
            dataset: &dataset,
            config: &config,
        },
    )
    .await?;
    let run = get(store, &id)
        .await?
        .ok_or_else(|| RunError::Internal(format!("run {id} vanished")))?;
    let run_dir = PathBuf::from(&run.run_dir);
    if let Err(e) = write_manifest(&run_dir, &id, &model_path, &model_id, &dataset, &req.config) {
        // nothing half-written: the row goes with the folder that could not be made
        sqlx::query("DELETE FROM runs WHERE id = ?")
            .bind(&id)
            .execute(store.pool())
            .await?;
        return Err(RunError::User(e));
    }
    Ok(run)
}

/// What a new row of `runs` holds (it starts `queued`).
pub(crate) struct RunRow<'a> {
    pub kind: &'a str,
    pub method: &'a str,
    pub model_id: &'a Option<String>,
    pub model_path: &'a Path,
    pub dataset: &'a DatasetRecord,
    pub config: &'a str,
}

/// Insert a `queued` run under the next free id (`run-N`) and return the id; two processes
/// creating runs at once get different ids.
pub(crate) async fn insert_row(
    store: &Store,
    dir: &DataDir,
    row: &RunRow<'_>,
) -> Result<String, RunError> {
    for _ in 0..20 {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(CAST(substr(id, 5) AS INTEGER)), 0) + 1 FROM runs WHERE id LIKE 'run-%'",
        )
        .fetch_one(store.pool())
        .await?;
        let id = format!("run-{n}");
        let run_dir = dir.runs().join(&id);
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO runs (id, status, kind, method, model_id, model_path, dataset_id, dataset_sha256, config, run_dir, app_version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(crate::run_state::RunState::Queued)
        .bind(row.kind)
        .bind(row.method)
        .bind(row.model_id)
        .bind(row.model_path.to_string_lossy())
        .bind(&row.dataset.id)
        .bind(&row.dataset.sha256)
        .bind(row.config)
        .bind(run_dir.to_string_lossy())
        .bind(crate::APP_VERSION)
        .execute(store.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(id);
        }
    }
    Err(RunError::Internal("cannot allocate a run id".into()))
}

/// `run.json`: what the run is made of, beside its checkpoints.
pub(crate) fn write_manifest(
    run_dir: &Path,
    id: &str,
    model_path: &Path,
    model_id: &Option<String>,
    dataset: &DatasetRecord,
    config: &TrainConfig,
) -> Result<(), String> {
    std::fs::create_dir_all(run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let manifest = serde_json::json!({
        "id": id,
        "model": model_path,
        "model_id": model_id,
        "dataset": {"id": dataset.id, "sha256": dataset.sha256, "path": dataset.path, "format": dataset.format},
        "config": config,
        "app_version": crate::APP_VERSION,
    });
    write_atomically(
        &run_dir.join("run.json"),
        &serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )
}

/// The training and eval examples of a dataset, rendered and tokenized for `source`.
pub fn prepare_data(
    source: &ModelSource,
    dataset: &Dataset,
    display_path: &str,
    cfg: &TrainConfig,
    notes: &mut Vec<String>,
) -> Result<TrainData, RunError> {
    let tok = &source.tokenizer;
    let template = match &source.chat_template {
        Some(t) => Some(
            ChatTemplate::new(
                t,
                tok.bos_token.as_deref().unwrap_or(""),
                tok.eos_token.as_deref().unwrap_or(""),
            )
            .map_err(|e| {
                RunError::User(format!("{}: chat template: {e}", source.path.display()))
            })?,
        ),
        None => None,
    };
    let eos = tok.eos_ids.first().copied();
    let mut rows: Vec<Tokenized> = Vec::with_capacity(dataset.examples.len());
    let (mut long, mut first_long, mut empty) = (0usize, None, 0usize);
    for (at, ex) in &dataset.examples {
        let mut t = tokenize_example(ex, template.as_ref(), &tok.inner, eos, cfg.train_on_prompt)
            .map_err(|e| RunError::User(format!("{display_path}: {at}: {e}")))?;
        if t.max_len() > cfg.seq_len && !cfg.packing {
            if cfg.truncate {
                t.truncate(cfg.seq_len);
            } else {
                long += 1;
                first_long.get_or_insert((*at, t.max_len()));
                continue;
            }
        }
        if t.has_targets() {
            rows.push(t);
        } else {
            empty += 1;
        }
    }
    if let Some((at, n)) = first_long {
        return Err(RunError::User(format!(
            "{display_path}: {at}: the record is {n} tokens, longer than seq_len {} ({long} of {} records are); raise `seq_len`, or `--set truncate=true` to cut them, or `--set packing=true`",
            cfg.seq_len,
            dataset.examples.len()
        )));
    }
    if empty > 0 {
        notes.push(format!(
            "{empty} record(s) have no tokens to learn after the template (and truncation) and are left out"
        ));
    }
    if rows.is_empty() {
        return Err(RunError::User(format!(
            "{display_path}: no record has tokens to learn"
        )));
    }
    whetstone_engine::train::preference::check_rows(cfg.objective, &rows)
        .map_err(|e| RunError::User(format!("{display_path}: {e}")))?;
    let (train_idx, eval_idx) =
        whetstone_data::dataset::split(rows.len(), cfg.eval_fraction, cfg.split_seed());
    let pick = |idx: &[usize]| idx.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>();
    Ok(TrainData {
        train: pick(&train_idx),
        eval: pick(&eval_idx),
    })
}

/// Options for [`execute`] that are not part of the run's config.
#[derive(Default)]
pub struct ExecOptions {
    pub resume: bool,
    pub cancel: Arc<AtomicBool>,
    pub dump_first_grads: Option<PathBuf>,
}

/// Whether a process with this id exists (this one always; others on Linux only, elsewhere
/// false).
pub(crate) fn pid_alive(pid: i64) -> bool {
    pid == std::process::id() as i64 || Path::new(&format!("/proc/{pid}")).exists()
}

/// An objective's named metrics of one step or evaluation, one row each.
async fn insert_named(
    tx: &mut sqlx::SqliteConnection,
    run_id: &str,
    kind: &str,
    step: u64,
    metrics: &whetstone_engine::train::Metrics,
) -> Result<(), RunError> {
    for (name, value) in metrics.iter().filter(|(_, v)| v.is_finite()) {
        sqlx::query(
            "INSERT OR REPLACE INTO run_metric_values (run_id, kind, step, name, value) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(run_id)
        .bind(kind)
        .bind(step as i64)
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Persist a batch of events (each with the seconds of training when it arrived) in one
/// transaction.
async fn flush(
    store: &Store,
    run_id: &str,
    seq: &mut i64,
    batch: &mut Vec<(TrainEvent, f64)>,
) -> Result<(), RunError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = store.pool().begin().await?;
    let mut steps_done = None;
    for (e, time_s) in batch.drain(..) {
        match &e {
            TrainEvent::Step {
                step,
                loss,
                lr,
                grad_norm,
                tokens_per_s,
                mem_bytes,
                tokens,
                metrics,
                ..
            } => {
                sqlx::query(
                    "INSERT OR REPLACE INTO run_metrics (run_id, kind, step, loss, lr, grad_norm, tokens_per_s, mem_bytes, tokens, time_s)
                     VALUES (?, 'train', ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(run_id)
                .bind(*step as i64)
                .bind(loss)
                .bind(lr)
                .bind(grad_norm)
                .bind(tokens_per_s)
                .bind(*mem_bytes as i64)
                .bind(*tokens as i64)
                .bind(time_s)
                .execute(&mut *tx)
                .await?;
                insert_named(&mut tx, run_id, "train", *step, metrics).await?;
                steps_done = Some(*step as i64);
            }
            TrainEvent::Eval {
                step,
                eval_loss,
                perplexity,
                metrics,
            } => {
                sqlx::query(
                    "INSERT OR REPLACE INTO run_metrics (run_id, kind, step, loss, perplexity, time_s) VALUES (?, 'eval', ?, ?, ?, ?)",
                )
                .bind(run_id)
                .bind(*step as i64)
                .bind(eval_loss)
                .bind(perplexity)
                .bind(time_s)
                .execute(&mut *tx)
                .await?;
                insert_named(&mut tx, run_id, "eval", *step, metrics).await?;
            }
            other => {
                let v = serde_json::to_value(other).unwrap_or(Value::Null);
                let kind = v["event"].as_str().unwrap_or("log").to_string();
                let step = v["step"].as_i64().unwrap_or(0);
                *seq += 1;
                sqlx::query("INSERT INTO run_events (run_id, seq, step, kind, payload) VALUES (?, ?, ?, ?, ?)")
                    .bind(run_id)
                    .bind(*seq)
                    .bind(step)
                    .bind(&kind)
                    .bind(v.to_string())
                    .execute(&mut *tx)
                    .await?;
                match other {
                    TrainEvent::Started { total_steps, .. } => {
                        sqlx::query("UPDATE runs SET total_steps = ? WHERE id = ?")
                            .bind(*total_steps as i64)
                            .bind(run_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    TrainEvent::Finished {
                        status, summary, ..
                    } => {
                        sqlx::query(
                            "UPDATE runs SET status = ?, steps_done = ?, best_eval_loss = ?, final_train_loss = ?,
                             tokens_per_s = ?, peak_mem_bytes = ?, summary = ?, error = ?, pid = NULL,
                             finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
                        )
                        .bind(crate::run_state::RunState::from(*status))
                        .bind(summary.steps_done as i64)
                        .bind(summary.best_eval_loss)
                        .bind(summary.final_train_loss)
                        .bind(summary.tokens_per_s)
                        .bind(summary.peak_mem_bytes as i64)
                        .bind(serde_json::to_string(summary).unwrap_or_default())
                        .bind(&summary.message)
                        .bind(run_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(s) = steps_done {
        sqlx::query("UPDATE runs SET steps_done = ? WHERE id = ?")
            .bind(s)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// An event as the CLI's `--json` prints it: the engine's event plus `run_id`.
pub fn event_json(run_id: &str, e: &TrainEvent) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("run_id".into(), Value::String(run_id.to_string()));
    }
    v
}

/// Run (or resume) a registered run to its end. Events are persisted in batches and passed
/// to `on_event` as they come.
pub async fn execute(
    store: &Store,
    run: &RunRecord,
    opts: ExecOptions,
    mut on_event: impl FnMut(&TrainEvent),
) -> Result<Summary, RunError> {
    let cfg = run.config()?;
    let run_dir = PathBuf::from(&run.run_dir);
    let resume_from = if opts.resume {
        if run.status == crate::run_state::RunState::Running
            && run
                .pid
                .is_some_and(|p| p != std::process::id() as i64 && pid_alive(p))
        {
            return Err(RunError::User(format!(
                "run {} is still running (process {}); stop it first",
                run.id,
                run.pid.unwrap_or(0)
            )));
        }
        if run.status == crate::run_state::RunState::Completed {
            return Err(RunError::User(format!("run {} already completed", run.id)));
        }
        match find_checkpoint(&run_dir) {
            Some(c) => Some(c),
            // stopped while waiting in a queue: it starts from the beginning
            None if run.steps_done == 0 => None,
            None => {
                return Err(RunError::User(format!(
                    "run {} has no checkpoint to resume from (it stopped before its first save); start a new run",
                    run.id
                )))
            }
        }
    } else {
        None
    };
    let dataset: DatasetRecord = datasets::get(store, &run.dataset_id)
        .await?
        .ok_or_else(|| {
            RunError::User(format!(
                "run {}: dataset `{}` is gone",
                run.id, run.dataset_id
            ))
        })?;
    // A resumed run forgets what the interrupted process logged after its checkpoint; one
    // that starts from the beginning (it was stopped in the queue, perhaps just as it began
    // and logged its start) forgets everything that attempt logged.
    let mut seq: i64 = 0;
    if resume_from.is_none() {
        for table in ["run_metrics", "run_metric_values", "run_events"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE run_id = ?"))
                .bind(&run.id)
                .execute(store.pool())
                .await?;
        }
    }
    if let Some(ckpt) = &resume_from {
        let state: whetstone_engine::train::CheckpointState =
            std::fs::read_to_string(ckpt.join("state.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| {
                    RunError::User(format!("{}: unreadable checkpoint state", ckpt.display()))
                })?;
        for table in ["run_metrics", "run_metric_values"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE run_id = ? AND step > ?"
            ))
            .bind(&run.id)
            .bind(state.step as i64)
            .execute(store.pool())
            .await?;
        }
        sqlx::query("DELETE FROM run_events WHERE run_id = ? AND step > ?")
            .bind(&run.id)
            .bind(state.step as i64)
            .execute(store.pool())
            .await?;
        seq = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM run_events WHERE run_id = ?")
            .bind(&run.id)
            .fetch_one(store.pool())
            .await?;
    }
    sqlx::query("UPDATE runs SET status = ?, pid = ?, error = NULL, finished_at = NULL, control = NULL WHERE id = ?")
        .bind(crate::run_state::RunState::Running)
        .bind(std::process::id() as i64)
        .bind(&run.id)
        .execute(store.pool())
        .await?;

    // Training time continues from where an interrupted run's metrics stopped.
    let time_base: f64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(time_s), 0.0) FROM run_metrics WHERE run_id = ?")
            .bind(&run.id)
            .fetch_one(store.pool())
            .await?;
    let clock = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<TrainEvent>();
    let model_path = PathBuf::from(&run.model_path);
    let display_path = dataset.original_path.clone();
    let cancel = opts.cancel.clone();
    let dump = opts.dump_first_grads.clone();
    let worker = std::thread::Builder::new()
        .name(format!("train-{}", run.id))
        .spawn(move || -> Result<Summary, RunError> {
            let device = whetstone_engine::candle_device(&cfg.device).map_err(RunError::User)?;
            let dtype = cfg.compute_dtype(whetstone_engine::device::native_bf16(&device));
            let (source, mut model) = whetstone_engine::load_model_with(
                &model_path,
                &device,
                dtype,
                cfg.method.spec().facts().quantizes_base,
            )
            .map_err(|e| RunError::User(e.to_string()))?;
            let data = dataset.load().map_err(RunError::from)?;
            let mut notes = vec![];
            let train_data = prepare_data(&source, &data, &display_path, &cfg, &mut notes)?;
            for n in notes {
                let _ = tx.send(TrainEvent::Log {
                    step: 0,
                    level: "warning".into(),
                    message: n,
                });
            }
            let spec = TrainSpec {
                config: cfg,
                data: train_data,
                run_dir,
                resume_from,
                cancel,
                tokenizer: Some(&source.tokenizer),
                dump_first_grads: dump,
            };
            let base = model_path.display().to_string();
            whetstone_engine::train(&mut model, spec, &base, |e| {
                let _ = tx.send(e);
            })
            .map_err(|e| match e {
                whetstone_engine::TrainError::Invalid(m) => RunError::User(m),
                // names the file and the OS's reason (disk full, read-only): the user's to fix
                e @ whetstone_engine::TrainError::Checkpoint { .. } => {
                    RunError::User(e.to_string())
                }
                other => RunError::Internal(other.to_string()),
            })
        })
        .map_err(|e| RunError::Internal(format!("cannot start the training thread: {e}")))?;

    let mut batch = vec![];
    let mut last_flush = Instant::now();
    let mut last_poll = Instant::now();
    let mut requested: Option<String> = None;
    // A database error stops the run but not this loop: the training thread is told to stop
    // and drained, so it never outlives its run (and the device is free for the next).
    let mut db_error: Option<RunError> = None;
    let note = |r: Result<(), RunError>, db_error: &mut Option<RunError>| {
        if let Err(e) = r {
            opts.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            db_error.get_or_insert(e);
        }
    };
    loop {
        if requested.is_none()
            && db_error.is_none()
            && last_poll.elapsed() >= Duration::from_millis(300)
        {
            // a pause or stop asked for by another client: stop after this step, with a checkpoint
            last_poll = Instant::now();
            match sqlx::query_scalar("SELECT control FROM runs WHERE id = ?")
                .bind(&run.id)
                .fetch_one(store.pool())
                .await
            {
                Ok(c) => requested = c,
                Err(e) => note(Err(e.into()), &mut db_error),
            }
            if requested.is_some() {
                opts.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let got = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        match got {
            Ok(Some(e)) => {
                // Metrics up to a checkpoint are durable before anyone hears of it, so a
                // killed run resumes with its whole curve.
                let urgent = matches!(
                    e,
                    TrainEvent::Finished { .. } | TrainEvent::Checkpoint { .. }
                );
                batch.push((e.clone(), time_base + clock.elapsed().as_secs_f64()));
                if db_error.is_none()
                    && (urgent
                        || batch.len() >= 64
                        || last_flush.elapsed() > Duration::from_millis(500))
                {
                    let r = flush(store, &run.id, &mut seq, &mut batch).await;
                    note(r, &mut db_error);
                    last_flush = Instant::now();
                }
                on_event(&e);
            }
            Ok(None) => break,
            Err(_) if db_error.is_none() => {
                let r = flush(store, &run.id, &mut seq, &mut batch).await;
                note(r, &mut db_error);
                last_flush = Instant::now();
            }
            Err(_) => {}
        }
    }
    if let Some(e) = db_error {
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        return Err(e);
    }
    flush(store, &run.id, &mut seq, &mut batch).await?;
    if requested.as_deref() == Some("pause") {
        sqlx::query("UPDATE runs SET status = ? WHERE id = ? AND status = ?")
            .bind(crate::run_state::RunState::Paused)
            .bind(&run.id)
            .bind(crate::run_state::RunState::Cancelled)
            .execute(store.pool())
            .await?;
    }
    sqlx::query("UPDATE runs SET control = NULL WHERE id = ?")
        .bind(&run.id)
        .execute(store.pool())
        .await?;
    let result = tokio::task::spawn_blocking(move || worker.join())
        .await
        .map_err(|e| RunError::Internal(e.to_string()))?
        .unwrap_or_else(|_| Err(RunError::Internal("the training thread panicked".into())));
    if let Err(e) = &result {
        sqlx::query(
            "UPDATE runs SET status = ?, error = ?, pid = NULL, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
        )
        .bind(crate::run_state::RunState::Failed)
        .bind(e.to_string())
        .bind(&run.id)
        .execute(store.pool())
        .await?;
    }
    result
}

/// The adapter folder a reference names: a folder, or a run id (its best checkpoint, else
/// its last).
pub async fn adapter_dir(store: &Store, reference: &str) -> Result<PathBuf, RunError> {
    let p = PathBuf::from(reference);
    if p.is_dir() {
        return Ok(p);
    }
    let run = get(store, reference).await?.ok_or_else(|| {
        RunError::User(format!(
            "no adapter `{reference}`: not a folder or a run id"
        ))
    })?;
    let base = PathBuf::from(&run.run_dir).join("checkpoints");
    ["best", "last"]
        .iter()
        .map(|n| base.join(n))
        .find(|d| d.join("state.json").exists())
        .ok_or_else(|| RunError::User(format!("run {} has no checkpoint yet", run.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_front_ends_get_the_same_config_and_device() {
        let best = crate::methods::pick_device(None).unwrap().label();
        let c = build_config(Some("qlora"), None, &["lr=1e-4".to_string()]).unwrap();
        assert_eq!(c.device, best);
        assert_eq!(c.method, whetstone_engine::MethodKind::Qlora);
        assert_eq!(c.lr, Some(1e-4));
        // a TOML device, or a pair's, is kept; later settings win
        let c = build_config(None, Some(("device = \"cpu\"\n", "run.toml")), &[]).unwrap();
        assert_eq!(c.device, "cpu");
        let c = build_config(Some("lora"), None, &["device=cuda:1".to_string()]).unwrap();
        assert_eq!(c.device, "cuda:1");
        let e = build_config(Some("lora"), None, &["lr=abc".to_string()]).unwrap_err();
        assert!(e.starts_with("lr=abc: "), "{e}");
        assert!(build_config(Some("nope"), None, &[]).is_err());
    }
}
