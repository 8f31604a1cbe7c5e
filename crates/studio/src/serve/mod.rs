//! `whetstone serve` and the window's Serve screen: an OpenAI-compatible HTTP server over
//! one loaded base model and any number of adapters, picked per request by `model`.
//!
//! Each adapter is the base with the adapter's tensors applied to a copy of the model
//! *structure* — the base's weight tensors are shared, never copied — so an extra adapter
//! costs its own parameters, and switching between adapters is picking another entry.
//! Requests queue for a single model thread ([`worker`]); the HTTP side is axum ([`http`]).

mod http;
pub mod openai;
mod worker;

use crate::inference::{self, Loaded};
use crate::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use whetstone_engine::DecoderModel;

/// How to serve: where to listen and whom to answer.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port (the URL says which).
    pub port: u16,
    /// Requests must send `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Requests waiting beyond the one being answered; more are refused with 429.
    pub max_queue: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            max_queue: 64,
        }
    }
}

/// One servable model: the base, or the base with an adapter.
pub struct Entry {
    pub name: String,
    pub model: Arc<DecoderModel>,
    pub info: ServedModel,
}

/// What `GET /v1/models` and the window say about a served model.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct ServedModel {
    pub id: String,
    /// `base` or `adapter`.
    pub kind: String,
    /// The model file or folder, the run id or the adapter folder it came from.
    pub source: String,
    /// Seconds it took to apply the adapter to the loaded base (0 for the base).
    pub load_s: f64,
    /// Unix seconds when it was added.
    pub created: u64,
}

/// Counters since the server started.
#[derive(Debug, Clone, Default, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct ServeStats {
    pub requests: u64,
    pub failed: u64,
    /// Requests whose client went away before or during the answer.
    pub cancelled: u64,
    pub queued: usize,
    /// The model answering right now, if any.
    pub active: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Seconds spent decoding (tokens/s = completion_tokens / decode_s).
    pub decode_s: f64,
    /// Seconds the model thread was busy.
    pub busy_s: f64,
    pub last_tokens_per_s: f64,
    pub last_model: Option<String>,
}

/// The server's state as the window shows it.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct ServeStatus {
    /// The base URL a client is pointed at (`.../v1`).
    pub url: String,
    pub base: String,
    pub models: Vec<ServedModel>,
    pub stats: ServeStats,
    pub uptime_s: f64,
    pub context_tokens: usize,
    pub api_key_required: bool,
    pub resident_bytes: u64,
}

/// The counters, also after a thread panicked holding them (they are plain numbers).
fn lock_stats(stats: &Mutex<ServeStats>) -> std::sync::MutexGuard<'_, ServeStats> {
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Shared {
    loaded: Arc<Loaded>,
    base: String,
    registry: RwLock<BTreeMap<String, Arc<Entry>>>,
    stats: Arc<Mutex<ServeStats>>,
    jobs: Mutex<Option<std::sync::mpsc::SyncSender<worker::Job>>>,
    api_key: Option<String>,
    store: Store,
    started: Instant,
    url: String,
    next_id: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.registry.read().ok()?.get(name).cloned()
    }

    fn names(&self) -> Vec<String> {
        self.registry
            .read()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn infos(&self) -> Vec<ServedModel> {
        self.registry
            .read()
            .map(|r| r.values().map(|e| e.info.clone()).collect())
            .unwrap_or_default()
    }

    fn context(&self) -> usize {
        self.loaded.model.config.max_position_embeddings
    }

    fn stats(&self) -> ServeStats {
        lock_stats(&self.stats).clone()
    }

    fn status(&self) -> ServeStatus {
        ServeStatus {
            url: self.url.clone(),
            base: self.base.clone(),
            models: self.infos(),
            stats: self.stats(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            context_tokens: self.context(),
            api_key_required: self.api_key.is_some(),
            resident_bytes: whetstone_engine::device::rss_bytes(),
        }
    }

    /// Resolve `source` (a run id or an adapter folder), apply it to a copy of the base that
    /// shares the base's tensors, and serve it as `name`.
    async fn add_adapter(&self, name: &str, source: &str) -> Result<ServedModel, String> {
        check_name(name)?;
        if self.entry(name).is_some() {
            return Err(format!(
                "a model named `{name}` is already served; remove it first"
            ));
        }
        let dir = crate::runs::adapter_dir(&self.store, source)
            .await
            .map_err(|e| e.to_string())?;
        let loaded = self.loaded.clone();
        let (model, load_s) =
            tokio::task::spawn_blocking(move || inference::with_adapter(&loaded, Some(&dir)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        let info = ServedModel {
            id: name.to_string(),
            kind: "adapter".into(),
            source: source.to_string(),
            load_s,
            created: unix_now(),
        };
        let entry = Arc::new(Entry {
            name: name.to_string(),
            model: Arc::new(model),
            info: info.clone(),
        });
        let mut r = self.registry.write().map_err(|e| e.to_string())?;
        if r.contains_key(name) {
            return Err(format!("a model named `{name}` is already served"));
        }
        r.insert(name.to_string(), entry);
        Ok(info)
    }

    fn remove_adapter(&self, name: &str) -> Result<(), String> {
        if name == self.base {
            return Err(format!("`{name}` is the base model; it cannot be removed"));
        }
        let mut r = self.registry.write().map_err(|e| e.to_string())?;
        r.remove(name)
            .map(|_| ())
            .ok_or_else(|| format!("no adapter named `{name}` is served"))
    }
}

/// Adapter names travel in URLs and JSON: keep them plain.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "adapter name `{name}`: use 1 to 64 letters, digits, `-`, `_`, `.` or `:`"
        ))
    }
}

/// The name the base is served under: a registered model's id, else the file or folder name.
pub fn base_name(reference: &str) -> String {
    let p = std::path::Path::new(reference);
    if !p.exists() {
        return reference.to_string();
    }
    let stem = if p.is_dir() {
        p.file_name()
    } else {
        p.file_stem()
    };
    stem.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "base".into())
}

/// A running server. Dropping it without [`ServerHandle::stop`] leaves it running until the
/// process ends.
pub struct ServerHandle {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl ServerHandle {
    pub fn status(&self) -> ServeStatus {
        self.shared.status()
    }

    pub fn url(&self) -> &str {
        &self.shared.url
    }

    pub async fn add_adapter(&self, name: &str, source: &str) -> Result<ServedModel, String> {
        self.shared.add_adapter(name, source).await
    }

    pub fn remove_adapter(&self, name: &str) -> Result<(), String> {
        self.shared.remove_adapter(name)
    }

    /// Stop listening, end open streams, and let the model thread finish its current token.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Ok(mut jobs) = self.shared.jobs.lock() {
            jobs.take();
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }

    /// Wait until the server ends (Ctrl-C in the CLI, via `stop` elsewhere).
    pub async fn wait(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let _ = task.await;
        }
    }
}

/// Whether `host` only reaches this machine.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Start serving `loaded` as `base`, with `adapters` (name, run id or folder) applied;
/// run ids resolve through `store`.
pub async fn start(
    loaded: Arc<Loaded>,
    base: &str,
    adapters: &[(String, String)],
    options: &ServeOptions,
    store: Store,
) -> Result<ServerHandle, String> {
    let addr = format!("{}:{}", options.host, options.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match local.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        }
    };
    let stats = Arc::new(Mutex::new(ServeStats::default()));
    let (tx, rx) = std::sync::mpsc::sync_channel(options.max_queue.max(1));
    let base_entry = Arc::new(Entry {
        name: base.to_string(),
        model: Arc::new(loaded.model.clone()),
        info: ServedModel {
            id: base.to_string(),
            kind: "base".into(),
            source: loaded.source.path.display().to_string(),
            load_s: loaded.load_s,
            created: unix_now(),
        },
    });
    let shared = Arc::new(Shared {
        loaded: loaded.clone(),
        base: base.to_string(),
        registry: RwLock::new(BTreeMap::from([(base.to_string(), base_entry)])),
        stats: stats.clone(),
        jobs: Mutex::new(Some(tx)),
        api_key: options.api_key.clone(),
        store,
        started: Instant::now(),
        url: format!("http://{host}:{}/v1", local.port()),
        next_id: std::sync::atomic::AtomicU64::new(1),
    });
    for (name, source) in adapters {
        shared
            .add_adapter(name, source)
            .await
            .map_err(|e| format!("--adapter {name}={source}: {e}"))?;
    }
    std::thread::Builder::new()
        .name("whetstone-serve".into())
        .spawn(move || worker::run(rx, loaded, stats))
        .map_err(|e| e.to_string())?;
    let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
    let app = http::router(shared.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = on_shutdown.await;
            })
            .await;
    });
    Ok(ServerHandle {
        shared,
        shutdown: Some(shutdown),
        task: Some(task),
        addr: local,
    })
}
