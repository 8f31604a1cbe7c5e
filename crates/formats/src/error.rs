//! The one error shape for "this file is wrong": the path, then what is wrong with it.
//!
//! Every loader in this crate reports bad input this way, so the CLI can print one line that
//! names the file and the problem (and the field, where there is one) and exit 1.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl FileError {
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for FileError {}

/// Attach a path to any displayable error.
pub trait WithPath<T> {
    fn at(self, path: &Path) -> Result<T, FileError>;
}

impl<T, E: fmt::Display> WithPath<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, FileError> {
        self.map_err(|e| FileError::new(path, e.to_string()))
    }
}
