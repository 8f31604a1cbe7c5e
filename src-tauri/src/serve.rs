//! The Serve screen's commands: start and stop the OpenAI-compatible server over a model the
//! studio has loaded (the playground's, when it is the same), add and remove adapters, and
//! read its live counters.

use super::{err, loaded_model, CommandResult, State};
use whetstone_studio::error::AppError;
use whetstone_studio::models;
use whetstone_studio::serve::{self, ServeOptions, ServeStatus};

/// Serve `model` with the given runs' adapters (each served under its run id). `public`
/// listens on every interface instead of 127.0.0.1.
#[tauri::command]
pub async fn serve_start(
    s: State<'_>,
    model: String,
    adapters: Vec<String>,
    port: u16,
    public: bool,
    api_key: Option<String>,
) -> CommandResult<ServeStatus> {
    let mut slot = s.server.lock().await;
    if let Some(running) = slot.as_ref() {
        return Err(AppError::user(format!(
            "a server is already running at {}; stop it first",
            running.url()
        )));
    }
    let path = models::resolve(&s.store, &model).await.map_err(err)?;
    let loaded = loaded_model(&s, path).await?;
    let options = ServeOptions {
        host: if public { "0.0.0.0" } else { "127.0.0.1" }.into(),
        port,
        api_key: api_key.filter(|k| !k.trim().is_empty()),
        ..ServeOptions::default()
    };
    let pairs: Vec<(String, String)> = adapters.iter().map(|a| (a.clone(), a.clone())).collect();
    let handle = serve::start(loaded, &model, &pairs, &options, s.store.clone())
        .await
        .map_err(AppError::user)?;
    let status = handle.status();
    *slot = Some(handle);
    Ok(status)
}

/// The running server's state, or `None` when none runs.
#[tauri::command]
pub async fn serve_status(s: State<'_>) -> CommandResult<Option<ServeStatus>> {
    Ok(s.server.lock().await.as_ref().map(|h| h.status()))
}

#[tauri::command]
pub async fn serve_stop(s: State<'_>) -> CommandResult<()> {
    let handle = s.server.lock().await.take();
    if let Some(h) = handle {
        h.stop().await;
    }
    Ok(())
}

/// Serve one more adapter (a run id or a folder) as `name`.
#[tauri::command]
pub async fn serve_add_adapter(
    s: State<'_>,
    name: String,
    source: String,
) -> CommandResult<ServeStatus> {
    let slot = s.server.lock().await;
    let h = slot
        .as_ref()
        .ok_or_else(|| AppError::user("no server is running"))?;
    h.add_adapter(&name, &source)
        .await
        .map_err(AppError::user)?;
    Ok(h.status())
}

#[tauri::command]
pub async fn serve_remove_adapter(s: State<'_>, name: String) -> CommandResult<ServeStatus> {
    let slot = s.server.lock().await;
    let h = slot
        .as_ref()
        .ok_or_else(|| AppError::user("no server is running"))?;
    h.remove_adapter(&name).map_err(AppError::user)?;
    Ok(h.status())
}
