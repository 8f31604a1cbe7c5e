//! The Whetstone application service.
//!
//! Both front ends — the `whetstone` CLI and the desktop window — drive this crate and hold
//! no logic of their own. It owns the data directory, the SQLite store and, later, the run
//! queue, the model hub and reports.

pub mod datasets;
pub mod demo_model;
pub mod doctor;
pub mod history;
pub mod hub;
pub mod inference;
pub mod models;
pub mod paths;
pub mod report;
pub mod runs;
pub mod store;

pub use doctor::{doctor, DoctorReport};
pub use paths::DataDir;
pub use whetstone_data::DatasetFormat;
pub use whetstone_engine::{
    MethodKind, RunStatus, SamplingParams, Summary, TrainConfig, TrainEvent,
};

/// The application version, shared by every crate in the workspace.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");
