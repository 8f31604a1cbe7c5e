//! What every subcommand shares: the user-error type (exit 1, as opposed to a bug's exit 2),
//! opening the data directory and its database, and turning studio errors into one or the
//! other.

use whetstone_studio::models::ModelError;
use whetstone_studio::runs::RunError;
use whetstone_studio::store::Store;
use whetstone_studio::DataDir;

/// An error the user can fix (exit 1), as opposed to a bug (exit 2).
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UserError {}

/// Open the data directory's database (creating both if needed).
pub async fn open_store() -> anyhow::Result<Store> {
    let dir = DataDir::locate().map_err(|e| UserError(e.to_string()))?;
    dir.ensure().map_err(|e| UserError(e.to_string()))?;
    let store = Store::open(&dir.database())
        .await
        .map_err(|e| UserError(e.to_string()))?;
    // A run whose process died (kill -9, crash) is marked interrupted, ready for `resume`.
    whetstone_studio::history::recover_interrupted(&store)
        .await
        .map_err(run_error)?;
    Ok(store)
}

/// Model errors are the user's to fix, except a failing database.
pub fn model_error(e: ModelError) -> anyhow::Error {
    match e {
        ModelError::Store(s) => anyhow::anyhow!(s),
        other => UserError(other.to_string()).into(),
    }
}

pub fn run_error(e: RunError) -> anyhow::Error {
    match e {
        RunError::User(m) => UserError(m).into(),
        RunError::Internal(m) => anyhow::anyhow!(m),
        RunError::Store(s) => anyhow::anyhow!(s),
    }
}

pub fn data_dir() -> anyhow::Result<DataDir> {
    DataDir::locate().map_err(|e| UserError(e.to_string()).into())
}
