//! Where a run stands. One enum for the database column `runs.status`, the CLI's output and
//! the window (exported to TypeScript as `RunState`), so the names are written once.

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ts_rs::TS,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
#[ts(export)]
pub enum RunState {
    /// Waiting for its device.
    Queued,
    /// Training in a live process (`runs.pid`).
    Running,
    /// Stopped on request with a checkpoint, to be resumed.
    Paused,
    Completed,
    /// Stopped on request; resumable from its last checkpoint.
    Cancelled,
    /// Its process died (crash, kill); resumable from its last checkpoint.
    Interrupted,
    /// An error ended it (`runs.error` says which).
    Failed,
    /// The loss became NaN or infinite.
    Diverged,
}

impl RunState {
    pub const ALL: [RunState; 8] = [
        RunState::Queued,
        RunState::Running,
        RunState::Paused,
        RunState::Completed,
        RunState::Cancelled,
        RunState::Interrupted,
        RunState::Failed,
        RunState::Diverged,
    ];

    /// The name stored in `runs.status` and shown everywhere.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Completed => "completed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
            RunState::Failed => "failed",
            RunState::Diverged => "diverged",
        }
    }

    /// Stopped with a checkpoint a `resume` continues from.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            RunState::Paused | RunState::Cancelled | RunState::Interrupted
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<whetstone_engine::RunStatus> for RunState {
    fn from(s: whetstone_engine::RunStatus) -> Self {
        match s {
            whetstone_engine::RunStatus::Completed => RunState::Completed,
            whetstone_engine::RunStatus::Cancelled => RunState::Cancelled,
            whetstone_engine::RunStatus::Diverged => RunState::Diverged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names_and_engine_statuses_map_onto_them() {
        for s in RunState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            let back: RunState = serde_json::from_value(serde_json::json!(s.as_str())).unwrap();
            assert_eq!(back, s);
        }
        for e in [
            whetstone_engine::RunStatus::Completed,
            whetstone_engine::RunStatus::Cancelled,
            whetstone_engine::RunStatus::Diverged,
        ] {
            assert_eq!(RunState::from(e).as_str(), e.as_str());
        }
    }
}
