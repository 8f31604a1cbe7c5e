//! The sweep and soup commands: plan and start a sweep (its runs join the queue), list and
//! show sweeps, and make a soup of finished runs.

use super::{err, CommandResult, State};
use whetstone_studio::soup::{self, SoupReport};
use whetstone_studio::sweep::{self, PlannedRun, SweepSpec, SweepSummary, SweepView};

/// The runs a sweep would make, each validated (the wizard's run count).
#[tauri::command]
pub async fn sweep_plan(spec: SweepSpec) -> CommandResult<Vec<PlannedRun>> {
    let base = sweep::base_config(&spec).map_err(err)?;
    sweep::plan(&spec, &base).map_err(err)
}

/// Register the sweep's runs and queue them, one after another on their device.
#[tauri::command]
pub async fn sweep_start(s: State<'_>, spec: SweepSpec) -> CommandResult<SweepView> {
    let view = sweep::create(&s.store, &s.dir, &spec).await.map_err(err)?;
    for r in &view.runs {
        s.queue.submit(&r.id, false).await.map_err(err)?;
    }
    sweep::show(&s.store, &view.id).await.map_err(err)
}

#[tauri::command]
pub async fn sweeps_list(s: State<'_>) -> CommandResult<Vec<SweepSummary>> {
    sweep::list(&s.store).await.map_err(err)
}

#[tauri::command]
pub async fn sweep_show(s: State<'_>, id: String) -> CommandResult<SweepView> {
    sweep::show(&s.store, &id).await.map_err(err)
}

/// Average finished runs into a new `soup` run (uniform, or greedy by eval loss).
#[tauri::command]
pub async fn soup_make(s: State<'_>, runs: Vec<String>, greedy: bool) -> CommandResult<SoupReport> {
    soup::make(&s.store, &s.dir, &runs, greedy, |_| {})
        .await
        .map_err(err)
}
