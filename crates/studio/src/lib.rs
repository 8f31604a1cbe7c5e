//! The Whetstone application service.
//!
//! Both front ends — the `whetstone` CLI and the desktop window — drive this crate and hold
//! no logic of their own. It owns the data directory, the SQLite store and, later, the run
//! queue, the model hub and reports.

pub mod curated;
pub mod datasets;
pub mod demo_model;
pub mod doctor;
pub mod error;
pub mod export;
pub mod history;
pub mod hub;
pub mod inference;
pub mod methods;
pub mod models;
pub mod paths;
pub mod preferences;
pub mod queue;
pub mod report;
pub mod run_state;
pub mod runs;
pub mod samples;
pub mod serve;
pub mod soup;
pub mod store;
pub mod sweep;
pub mod task_eval;
pub mod task_metrics;

pub use doctor::{doctor, DoctorReport};
pub use paths::DataDir;
pub use run_state::RunState;
pub use whetstone_data::DatasetFormat;
pub use whetstone_engine::{
    Generation, MethodKind, RunStatus, SamplingParams, Summary, TrainConfig, TrainEvent,
};

pub use whetstone_formats as formats;

/// Resident bytes of `count` NF4 copies of a `[rows, cols]` matrix, measured (benchmarks).
pub fn measure_nf4(rows: usize, cols: usize, count: usize) -> Result<(u64, u64), String> {
    whetstone_engine::quant::measure_resident(rows, cols, count).map_err(|e| e.to_string())
}

/// The application version, shared by every crate in the workspace.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");
