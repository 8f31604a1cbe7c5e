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
    /// The message is kept to one line (see [`one_line`]).
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            message: one_line(&message.into()),
        }
    }
}

/// An error message as one line: the backtrace candle appends to its errors when
/// `RUST_BACKTRACE` is set is cut off, and line breaks that come from the file's own text
/// (a key, a token, a template) are escaped, so the CLI still prints one line per error.
pub fn one_line(message: &str) -> String {
    let message = message.find("\n   0: ").map_or(message, |i| &message[..i]);
    message.replace('\r', "\\r").replace('\n', "\\n")
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

#[cfg(test)]
mod tests {
    use super::*;

    // Found by whetstone-fuzz: with RUST_BACKTRACE set, candle's errors carried a
    // backtrace into our messages, and a key read from a file could hold a line break.
    #[test]
    fn messages_are_one_line() {
        let e = FileError::new("m.gguf", "bad magic\n   0: bt\n   at src/error.rs:1");
        assert_eq!(e.to_string(), "m.gguf: bad magic");
        let e = FileError::new("m.gguf", "architecture \"a\nb\r\"");
        assert_eq!(e.to_string(), "m.gguf: architecture \"a\\nb\\r\"");
    }
}
