// The app's commands get `allow-<command>` permissions generated here; the capability file
// (capabilities/default.json) grants exactly the ones the window uses. Keep this list equal
// to `generate_handler!` in src/lib.rs (a command missing here cannot be invoked).
const COMMANDS: &[&str] = &[
    "doctor",
    "models_list",
    "models_curated",
    "models_add",
    "hub_info",
    "hub_download",
    "datasets_list",
    "datasets_samples",
    "datasets_add",
    "datasets_inspect",
    "methods_table",
    "settings_schema",
    "estimate",
    "run_start",
    "run_resume",
    "run_control",
    "runs_list",
    "run_show",
    "run_metrics",
    "run_delete",
    "run_tag",
    "run_note",
    "runs_compare",
    "runs_report",
    "queue_positions",
    "chat",
    "export_run",
    "token_status",
    "token_set",
    "token_remove",
];

fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri build script failed");
}
