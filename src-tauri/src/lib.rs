//! The desktop shell: Tauri commands that forward to the studio crate, and the studio's
//! queue updates forwarded to the window as events. No logic lives here that the CLI does
//! not also have; each command resolves its arguments and makes one studio call.
//!
//! Lifecycle: the studio (data directory, database, run queue) opens with the window; runs
//! train in this process on their own threads, so leaving a run's screen never stops it.
//! Closing the window asks every training run to checkpoint and stop (at most a minute),
//! and the next start offers them for resume.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tauri::{Emitter, Manager};
use tokio::sync::broadcast::error::RecvError;

mod serve;
mod sweeps;
use serve::*;
use sweeps::*;
use whetstone_studio::datasets::{self, DatasetRecord, Inspection};
use whetstone_studio::error::AppError;
use whetstone_studio::export::{self, ExportFormat, ExportReport, ExportRequest, ExportUpdate};
use whetstone_studio::formats::ModelSource;
use whetstone_studio::history::{self, Comparison, Control, RunMetrics, RunView};
use whetstone_studio::hub::{self, DownloadUpdate, HubModelInfo, TokenStatus};
use whetstone_studio::inference::{self, ChatAnswer, Loaded};
use whetstone_studio::methods::{self, EstimateReport, MethodRow, SettingSpec};
use whetstone_studio::models::{self, ModelRecord};
use whetstone_studio::preferences::{self, Collected};
use whetstone_studio::queue::RunQueue;
use whetstone_studio::runs::{self, NewRun, RunError};
use whetstone_studio::samples::{self, SampleDataset};
use whetstone_studio::store::Store;
use whetstone_studio::{
    curated::CuratedModel, report::Report, DataDir, DatasetFormat, DoctorReport, SamplingParams,
    TrainConfig,
};

/// Errors cross the bridge as `{kind, message}` ([`AppError`]): the studio's own messages
/// (they name the file, line or key), with the kind decided in `whetstone_studio::error`.
type CommandResult<T> = Result<T, AppError>;

fn err(e: impl Into<AppError>) -> AppError {
    e.into()
}

/// What every command shares. Cheap to reach: Tauri hands commands a reference.
struct Studio {
    dir: DataDir,
    store: Store,
    queue: RunQueue,
    /// The last base model the playground loaded, kept so the next prompt answers at once.
    loaded: tokio::sync::Mutex<Option<(PathBuf, Arc<Loaded>)>>,
    /// The OpenAI-compatible server, while one runs.
    server: tokio::sync::Mutex<Option<whetstone_studio::serve::ServerHandle>>,
    exiting: AtomicBool,
}

type State<'a> = tauri::State<'a, Studio>;

#[tauri::command]
async fn doctor(s: State<'_>) -> CommandResult<DoctorReport> {
    Ok(whetstone_studio::doctor(&s.dir).await)
}

#[tauri::command]
async fn models_list(s: State<'_>) -> CommandResult<Vec<ModelRecord>> {
    whetstone_studio::demo_model::register(&s.store, &s.dir)
        .await
        .map_err(err)?;
    models::list(&s.store).await.map_err(err)
}

#[tauri::command]
async fn models_curated(device: Option<String>) -> CommandResult<Vec<CuratedModel>> {
    let dev = methods::pick_device(device.as_deref())?;
    Ok(whetstone_studio::curated::curated(&dev))
}

#[tauri::command]
async fn models_add(s: State<'_>, path: String, copy: bool) -> CommandResult<ModelRecord> {
    models::add_with(&s.store, &s.dir.models(), &path, copy, |_| {})
        .await
        .map_err(err)
}

#[tauri::command]
async fn hub_info(repo: String) -> CommandResult<HubModelInfo> {
    hub::model_info(&repo, None).await.map_err(err)
}

#[tauri::command]
async fn hub_download(
    app: tauri::AppHandle,
    s: State<'_>,
    repo: String,
) -> CommandResult<ModelRecord> {
    let reference = if repo.starts_with("hf:") {
        repo.clone()
    } else {
        format!("hf:{repo}")
    };
    // at most 10 progress events a second
    let last = std::sync::Mutex::new(Instant::now() - Duration::from_secs(1));
    let report = move |p: hub::DownloadProgress| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= Duration::from_millis(100) || p.bytes_done == p.bytes_total {
            *last = Instant::now();
            let _ = app.emit(
                "download",
                DownloadUpdate {
                    repo: repo.clone(),
                    progress: p,
                },
            );
        }
    };
    models::add(&s.store, &s.dir.models(), &reference, report)
        .await
        .map_err(err)
}

#[tauri::command]
async fn datasets_list(s: State<'_>) -> CommandResult<Vec<DatasetRecord>> {
    datasets::list(&s.store).await.map_err(err)
}

#[tauri::command]
async fn datasets_samples(s: State<'_>) -> CommandResult<Vec<SampleDataset>> {
    samples::install(&s.dir).map_err(err)
}

#[tauri::command]
async fn datasets_add(
    s: State<'_>,
    path: String,
    format: Option<String>,
    columns: Option<String>,
) -> CommandResult<DatasetRecord> {
    let format = match format.as_deref() {
        None | Some("") | Some("auto") => None,
        Some(f) => Some(DatasetFormat::parse(f).ok_or_else(|| {
            format!("format `{f}`: not one of alpaca, chat, sharegpt, text, csv, preference, kto")
        })?),
    };
    let columns = columns
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(datasets::parse_columns)
        .transpose()?;
    let file = PathBuf::from(&path);
    datasets::add(&s.store, &s.dir.datasets(), &file, format, columns, false)
        .await
        .map(|(rec, _)| rec)
        .map_err(err)
}

#[tauri::command]
async fn datasets_inspect(
    s: State<'_>,
    dataset: String,
    model: Option<String>,
    seq_len: usize,
    n: usize,
) -> CommandResult<Inspection> {
    let rec = datasets::resolve(&s.store, &s.dir.datasets(), &dataset)
        .await
        .map_err(err)?;
    let model = match model {
        Some(m) => Some(models::resolve(&s.store, &m).await.map_err(err)?),
        None => None,
    };
    tokio::task::spawn_blocking(move || datasets::inspect(&rec, model.as_deref(), seq_len, n))
        .await
        .map_err(err)?
        .map_err(err)
}

/// The model's config (architecture sizes) read from its files, off the async threads.
async fn model_source(s: &Studio, model: &str) -> CommandResult<ModelSource> {
    let path = models::resolve(&s.store, model).await.map_err(err)?;
    tokio::task::spawn_blocking(move || ModelSource::open(&path).map_err(err))
        .await
        .map_err(err)?
}

#[tauri::command]
async fn methods_table(
    s: State<'_>,
    model: String,
    device: Option<String>,
) -> CommandResult<Vec<MethodRow>> {
    let source = model_source(&s, &model).await?;
    let dev = methods::pick_device(device.as_deref())?;
    methods::table(&source.config, &dev, &[]).map_err(err)
}

#[tauri::command]
async fn settings_schema(method: String, sets: Vec<String>) -> CommandResult<Vec<SettingSpec>> {
    methods::settings_schema(&method, &sets).map_err(err)
}

#[tauri::command]
async fn estimate(
    s: State<'_>,
    model: String,
    method: String,
    sets: Vec<String>,
    device: Option<String>,
) -> CommandResult<EstimateReport> {
    let source = model_source(&s, &model).await?;
    let dev = methods::pick_device(device.as_deref())?;
    methods::estimate_run(&source.config, &method, &sets, &dev).map_err(err)
}

/// A run's config from the method and `key=value` pairs, built as the CLI builds it.
fn run_config(method: &str, sets: &[String]) -> CommandResult<TrainConfig> {
    whetstone_studio::runs::build_config(Some(method), None, sets).map_err(err)
}

#[tauri::command]
async fn run_start(
    s: State<'_>,
    model: String,
    dataset: String,
    method: String,
    sets: Vec<String>,
) -> CommandResult<RunView> {
    let config = run_config(&method, &sets)?;
    let req = NewRun {
        model,
        data: dataset,
        config,
    };
    let run = runs::create(&s.store, &s.dir, req).await.map_err(err)?;
    s.queue.submit(&run.id, false).await.map_err(err)?;
    history::show(&s.store, &run.id).await.map_err(err)
}

#[tauri::command]
async fn run_resume(s: State<'_>, id: String) -> CommandResult<RunView> {
    let view = history::show(&s.store, &id).await.map_err(err)?;
    if view.status == whetstone_studio::RunState::Completed {
        return Err(AppError::user(format!("run {id} already completed")));
    }
    s.queue.submit(&id, true).await.map_err(err)?;
    history::show(&s.store, &id).await.map_err(err)
}

#[tauri::command]
async fn run_control(s: State<'_>, id: String, action: String) -> CommandResult<RunView> {
    let what = match action.as_str() {
        "pause" => Control::Pause,
        "stop" => Control::Stop,
        other => return Err(AppError::user(format!("`{other}` is not pause or stop"))),
    };
    s.queue.control(&id, what).await.map_err(err)?;
    history::show(&s.store, &id).await.map_err(err)
}

#[tauri::command]
async fn runs_list(s: State<'_>) -> CommandResult<Vec<RunView>> {
    history::list(&s.store).await.map_err(err)
}

#[tauri::command]
async fn run_show(s: State<'_>, id: String) -> CommandResult<RunView> {
    history::show(&s.store, &id).await.map_err(err)
}

#[tauri::command]
async fn run_metrics(s: State<'_>, id: String) -> CommandResult<RunMetrics> {
    history::metrics(&s.store, &id).await.map_err(err)
}

#[tauri::command]
async fn run_delete(s: State<'_>, id: String) -> CommandResult<RunView> {
    let queued = s.queue.positions().iter().any(|(_, ids)| ids.contains(&id));
    if queued {
        return Err(AppError::user(format!(
            "run {id} is training or queued: stop it first"
        )));
    }
    history::delete(&s.store, &id).await.map_err(err)
}

#[tauri::command]
async fn run_tag(s: State<'_>, id: String, tags: Vec<String>, add: bool) -> CommandResult<RunView> {
    history::tag(&s.store, &id, &tags, add).await.map_err(err)
}

#[tauri::command]
async fn run_note(s: State<'_>, id: String, text: String) -> CommandResult<RunView> {
    history::note(&s.store, &id, &text).await.map_err(err)
}

#[tauri::command]
async fn runs_compare(s: State<'_>, ids: Vec<String>) -> CommandResult<Comparison> {
    history::compare(&s.store, &ids).await.map_err(err)
}

#[tauri::command]
async fn runs_report(s: State<'_>, ids: Vec<String>, by: String) -> CommandResult<Report> {
    let axis: history::Axis = by.parse()?;
    let c = history::compare(&s.store, &ids).await.map_err(err)?;
    let out = s.dir.exports().join(format!("report-{}", ids.join("-")));
    tokio::task::spawn_blocking(move || whetstone_studio::report::write(&c, &out, axis))
        .await
        .map_err(err)?
        .map_err(err)
}

#[tauri::command]
fn queue_positions(s: State<'_>) -> Vec<(String, Vec<String>)> {
    s.queue.positions()
}

/// Keep a Playground judgement in the library's preference dataset (DPO pairs or KTO ratings).
#[tauri::command]
async fn preference_record(s: State<'_>, collected: Collected) -> CommandResult<DatasetRecord> {
    preferences::record(&s.store, &s.dir.datasets(), &collected)
        .await
        .map_err(err)
}

/// The base model at `path`, loaded once on the studio's device and kept: the playground's
/// next prompt and the server share it.
async fn loaded_model(s: &Studio, path: PathBuf) -> CommandResult<Arc<Loaded>> {
    let mut slot = s.loaded.lock().await;
    if let Some((p, l)) = slot.as_ref() {
        if *p == path {
            return Ok(l.clone());
        }
    }
    let p = path.clone();
    let device = methods::pick_device(None)?.label();
    let l = tokio::task::spawn_blocking(move || inference::load(&p, &device, None, false))
        .await
        .map_err(err)?
        .map_err(err)?;
    let l = Arc::new(l);
    *slot = Some((path, l.clone()));
    Ok(l)
}

#[tauri::command]
async fn chat(
    s: State<'_>,
    model: String,
    adapters: Vec<Option<String>>,
    prompt: String,
    max_tokens: usize,
    temperature: f64,
) -> CommandResult<Vec<ChatAnswer>> {
    if prompt.trim().is_empty() {
        return Err(AppError::user("the prompt is empty"));
    }
    let path = models::resolve(&s.store, &model).await.map_err(err)?;
    let mut dirs = vec![];
    for a in adapters {
        let dir = match &a {
            Some(run) => Some(runs::adapter_dir(&s.store, run).await.map_err(err)?),
            None => None,
        };
        dirs.push((a, dir));
    }
    let loaded = loaded_model(&s, path).await?;
    let params = SamplingParams {
        max_tokens: max_tokens.clamp(1, 2048),
        temperature,
        top_k: None,
        top_p: None,
        repetition_penalty: 1.0,
        seed: 0,
        stop_strings: vec![],
    };
    tokio::task::spawn_blocking(move || inference::answer_each(&loaded, &dirs, &prompt, &params))
        .await
        .map_err(err)?
        .map_err(err)
}

#[tauri::command]
async fn export_run(
    app: tauri::AppHandle,
    s: State<'_>,
    run: String,
    format: String,
    dtype: Option<String>,
) -> CommandResult<ExportReport> {
    let format: ExportFormat = format.parse()?;
    let req = ExportRequest {
        run: run.clone(),
        format,
        out: None,
        checkpoint: None,
        dtype: dtype.filter(|d| !d.is_empty()),
    };
    let progress = move |stage: &str| {
        let _ = app.emit(
            "export",
            ExportUpdate {
                run_id: run.clone(),
                format,
                stage: stage.to_string(),
            },
        );
    };
    export::export(&s.store, &s.dir, req, progress)
        .await
        .map_err(|e: RunError| err(e))
}

#[tauri::command]
fn token_status() -> TokenStatus {
    hub::token::status()
}

#[tauri::command]
fn token_set(token: String) -> CommandResult<TokenStatus> {
    hub::token::store(&token)?;
    Ok(hub::token::status())
}

#[tauri::command]
fn token_remove() -> CommandResult<TokenStatus> {
    hub::token::remove()?;
    Ok(hub::token::status())
}

/// Open the studio: data directory, database (runs a crash left `running` become
/// `interrupted`), and the queue whose updates go to the window as `queue` events.
async fn open_studio(app: tauri::AppHandle) -> Result<Studio, AppError> {
    let dir = DataDir::locate().map_err(err)?;
    dir.ensure().map_err(err)?;
    let store = Store::open(&dir.database()).await.map_err(err)?;
    history::recover_interrupted(&store).await.map_err(err)?;
    let queue = RunQueue::new(store.clone());
    let mut rx = queue.subscribe();
    tauri::async_runtime::spawn(async move {
        loop {
            match rx.recv().await {
                // the queue already batches each run's events to ≤ 20 updates a second
                Ok(update) => {
                    let _ = app.emit("queue", update);
                }
                // a window that fell behind reloads from the database; keep going
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
    Ok(Studio {
        dir,
        store,
        queue,
        loaded: tokio::sync::Mutex::new(None),
        server: tokio::sync::Mutex::new(None),
        exiting: AtomicBool::new(false),
    })
}

/// Ask training runs to checkpoint and stop, wait for them (bounded), then exit.
fn shut_down(app: tauri::AppHandle) {
    let studio = app.state::<Studio>();
    if studio.exiting.swap(true, Ordering::SeqCst) {
        return;
    }
    let queue = studio.queue.clone();
    tauri::async_runtime::spawn(async move {
        queue.stop_all().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !queue.positions().iter().all(|(_, ids)| ids.is_empty()) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        app.exit(0);
    });
}

pub fn run() {
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_dialog::init())
        .plugin(tauri_plugin_opener::init())
        .setup(|app| {
            let studio = tauri::async_runtime::block_on(open_studio(app.handle().clone()))?;
            app.manage(studio);
            Ok(())
        })
        // generated by build.rs from commands.list, the one list of the window's commands
        .invoke_handler(include!(concat!(env!("OUT_DIR"), "/handler.rs")))
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: the Whetstone window could not start: {e}");
            std::process::exit(2);
        }
    };
    app.run(|handle, event| {
        if let tauri::RunEvent::ExitRequested { api, code, .. } = event {
            let studio = handle.state::<Studio>();
            let training = studio
                .queue
                .positions()
                .iter()
                .any(|(_, ids)| !ids.is_empty());
            // `code` is set when we called `exit` ourselves after stopping the runs
            if training && code.is_none() {
                api.prevent_exit();
                shut_down(handle.clone());
            }
        }
    });
}
