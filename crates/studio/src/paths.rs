//! The data directory: `WHETSTONE_HOME` if set, else the OS's per-user data directory.
//!
//! Layout: `whetstone.db` (SQLite), `models/`, `datasets/`, `runs/<run-id>/`, `exports/`.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("no home directory found: set WHETSTONE_HOME to choose the data directory")]
    NoHome,
    #[error("{path}: cannot create the data directory: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Resolve the data directory without touching the disk.
    pub fn locate() -> Result<Self, DataDirError> {
        if let Some(home) = std::env::var_os("WHETSTONE_HOME").filter(|v| !v.is_empty()) {
            return Ok(Self::at(PathBuf::from(home)));
        }
        directories::ProjectDirs::from("dev", "Whetstone", "Whetstone")
            .map(|d| Self::at(d.data_dir().to_path_buf()))
            .ok_or(DataDirError::NoHome)
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("whetstone.db")
    }
    pub fn models(&self) -> PathBuf {
        self.root.join("models")
    }
    pub fn datasets(&self) -> PathBuf {
        self.root.join("datasets")
    }
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }
    pub fn exports(&self) -> PathBuf {
        self.root.join("exports")
    }

    /// Create the directory tree if missing.
    pub fn ensure(&self) -> Result<(), DataDirError> {
        for dir in [
            self.root.clone(),
            self.models(),
            self.datasets(),
            self.runs(),
            self.exports(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| DataDirError::Create {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Write a file the user cares about through a temporary name and a rename, so a crash
/// leaves the old file or the new one, never half of one. Errors name the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_under_the_root() {
        let d = DataDir::at("/x/wh");
        assert_eq!(d.database(), Path::new("/x/wh/whetstone.db"));
        assert_eq!(d.models(), Path::new("/x/wh/models"));
        assert_eq!(d.runs(), Path::new("/x/wh/runs"));
    }

    #[test]
    fn ensure_creates_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::at(tmp.path().join("a/b"));
        d.ensure().unwrap();
        for p in [d.models(), d.datasets(), d.runs(), d.exports()] {
            assert!(p.is_dir(), "{}", p.display());
        }
    }
}
