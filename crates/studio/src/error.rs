//! The one error shape that crosses into the window: `{kind, message}`. Whether an error is
//! the user's to fix, the database's, or a bug is decided here, once, from the studio's own
//! error types; the window receives both (`BackendError` in `ui/src/lib/ipc.ts`) and shows
//! the message as it is.

use serde::Serialize;

/// Who can act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum ErrorKind {
    /// Bad input: a file, a field, a setting, a missing run. The message says what to change.
    User,
    /// The history database failed (disk full, locked, damaged).
    Store,
    /// Something inside Whetstone went wrong: worth a report.
    Bug,
}

/// An error as the window receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS, thiserror::Error)]
#[error("{message}")]
#[ts(export)]
pub struct AppError {
    pub kind: ErrorKind,
    pub message: String,
}

impl AppError {
    pub fn user(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::User,
            message: message.into(),
        }
    }

    pub fn bug(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Bug,
            message: message.into(),
        }
    }

    fn store(e: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Store,
            message: e.to_string(),
        }
    }
}

/// The studio's functions that return a plain message return the user's error.
impl From<String> for AppError {
    fn from(message: String) -> Self {
        Self::user(message)
    }
}

impl From<&str> for AppError {
    fn from(message: &str) -> Self {
        Self::user(message)
    }
}

/// Files the user named that cannot be read or parsed.
impl From<whetstone_formats::FileError> for AppError {
    fn from(e: whetstone_formats::FileError) -> Self {
        Self::user(e.to_string())
    }
}

/// A background task that panicked or was cancelled.
impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::bug(format!("a background task failed: {e}"))
    }
}

impl From<crate::runs::RunError> for AppError {
    fn from(e: crate::runs::RunError) -> Self {
        use crate::runs::RunError as E;
        match e {
            E::User(m) => Self::user(m),
            E::Internal(m) => Self::bug(m),
            E::Store(s) => Self::store(s),
        }
    }
}

impl From<crate::models::ModelError> for AppError {
    fn from(e: crate::models::ModelError) -> Self {
        crate::runs::RunError::from(e).into()
    }
}

impl From<crate::datasets::DatasetsError> for AppError {
    fn from(e: crate::datasets::DatasetsError) -> Self {
        crate::runs::RunError::from(e).into()
    }
}

impl From<crate::inference::InferenceError> for AppError {
    fn from(e: crate::inference::InferenceError) -> Self {
        use crate::inference::InferenceError as E;
        match e {
            E::User(m) => Self::user(m),
            E::Internal(m) => Self::bug(m),
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::store(e)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        Self::store(e)
    }
}

impl From<crate::paths::DataDirError> for AppError {
    fn from(e: crate::paths::DataDirError) -> Self {
        Self::user(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_follows_the_studio_error_and_the_message_is_kept() {
        let e: AppError =
            crate::runs::RunError::User("run.toml: `lr` is not a number".into()).into();
        assert_eq!(e.kind, ErrorKind::User);
        assert_eq!(e.message, "run.toml: `lr` is not a number");
        let e: AppError = crate::runs::RunError::Internal("shape mismatch".into()).into();
        assert_eq!(e.kind, ErrorKind::Bug);
        let e: AppError = crate::models::ModelError::Unknown("nope".into()).into();
        assert_eq!(e.kind, ErrorKind::User);
        assert!(e.message.contains("no model `nope`"));
        let v = serde_json::to_value(AppError::bug("x")).unwrap();
        assert_eq!(v, serde_json::json!({"kind": "bug", "message": "x"}));
    }
}
