//! The model registry: local HF folders and GGUF files the user added, by short id.
//!
//! Adding a model validates it fully except for loading the weights into memory: the config
//! parses, the tokenizer builds and fits the vocabulary, and the weight files are complete
//! (GGUF tensor extents, safetensors headers). A model that cannot be trained is refused here,
//! not halfway through a run.

use crate::hub::{self, DownloadProgress};
use crate::store::{Store, StoreError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use whetstone_formats::{FileError, ModelSource, SourceKind};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    File(#[from] FileError),
    #[error("no model `{0}`: not a file, a folder or a registered model id (see `whetstone models list`)")]
    Unknown(String),
    #[error("{0}")]
    Hub(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ts_rs::TS)]
#[ts(export)]
pub struct ModelRecord {
    pub id: String,
    pub name: String,
    pub source: String,
    pub reference: String,
    pub path: String,
    pub architecture: Option<String>,
    #[ts(type = "number | null")]
    pub parameter_count: Option<i64>,
    #[ts(type = "number | null")]
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub created_at: String,
}

/// A lowercase id made of letters, digits and dashes.
pub fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        "model".into()
    } else {
        s
    }
}

/// Register a model: a local folder or `.gguf` file, or `hf:owner/name` from the hub
/// (downloaded into `models_dir` first, reporting progress). Idempotent: the same path
/// returns the existing record.
pub async fn add(
    store: &Store,
    models_dir: &Path,
    reference: &str,
    report: impl Fn(DownloadProgress) + Send + Sync + 'static,
) -> Result<ModelRecord, ModelError> {
    add_with(store, models_dir, reference, false, report).await
}

/// [`add`]; with `copy`, a local folder or GGUF file is first copied into `models_dir/local/`
/// (through a staging name, so a failed copy leaves nothing), and the copy is registered.
pub async fn add_with(
    store: &Store,
    models_dir: &Path,
    reference: &str,
    copy: bool,
    report: impl Fn(DownloadProgress) + Send + Sync + 'static,
) -> Result<ModelRecord, ModelError> {
    let local = if reference.starts_with("hf:") {
        hub::download_model(reference, models_dir, None, report)
            .await
            .map_err(ModelError::Hub)?
    } else if copy {
        let from = PathBuf::from(reference);
        ModelSource::open(&from)?; // a model, before anything is copied
        let dir = models_dir.join("local");
        let to = dir.join(from.file_name().unwrap_or_default());
        if !to.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| FileError::new(&dir, format!("cannot create: {e}")))?;
            let stage = dir.join(format!(".copying-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&stage);
            let _ = std::fs::remove_file(&stage);
            let copied = copy_tree(&from, &stage).and_then(|_| std::fs::rename(&stage, &to));
            if let Err(e) = copied {
                let _ = std::fs::remove_dir_all(&stage);
                let _ = std::fs::remove_file(&stage);
                return Err(FileError::new(&to, format!("cannot copy the model here: {e}")).into());
            }
        }
        to
    } else {
        PathBuf::from(reference)
    };
    let path = std::fs::canonicalize(&local)
        .map_err(|e| FileError::new(&local, format!("cannot open: {e}")))?;
    let path_str = path.to_string_lossy().into_owned();
    if let Some(existing) = sqlx::query_as::<_, ModelRecord>("SELECT * FROM models WHERE path = ?")
        .bind(&path_str)
        .fetch_optional(store.pool())
        .await
        .map_err(StoreError::from)?
    {
        return Ok(existing);
    }
    let source = ModelSource::open(&path)?;
    source.check_weight_files()?;
    let stem = match source.kind {
        _ if reference.starts_with("hf:") => hub::parse_repo_id(reference).ok().map(|(_, n)| n),
        SourceKind::Gguf => path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        SourceKind::HfFolder => path.file_name().map(|s| s.to_string_lossy().into_owned()),
    }
    .unwrap_or_else(|| source.name.clone());
    let base = slug(&stem);
    let mut id = base.clone();
    for n in 2.. {
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM models WHERE id = ?")
            .bind(&id)
            .fetch_one(store.pool())
            .await
            .map_err(StoreError::from)?;
        if taken == 0 {
            break;
        }
        id = format!("{base}-{n}");
    }
    let source_kind = match source.kind {
        _ if reference.starts_with("hf:") => "hub",
        SourceKind::Gguf => "gguf",
        SourceKind::HfFolder => "folder",
    };
    sqlx::query(
        "INSERT INTO models (id, name, source, reference, path, architecture, parameter_count, size_bytes)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&source.name)
    .bind(source_kind)
    .bind(reference)
    .bind(&path_str)
    .bind(source.config.family.as_str())
    .bind(source.config.parameter_count() as i64)
    .bind(source.size_on_disk() as i64)
    .execute(store.pool())
    .await
    .map_err(StoreError::from)?;
    get(store, &id)
        .await?
        .ok_or_else(|| ModelError::Unknown(id))
}

/// Copy a file, or a folder's files (one level: model folders are flat), to `to`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_file() {
        return std::fs::copy(from, to).map(|_| ());
    }
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let p = e?.path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap_or_default()))?;
        }
    }
    Ok(())
}

pub async fn get(store: &Store, id: &str) -> Result<Option<ModelRecord>, ModelError> {
    Ok(
        sqlx::query_as::<_, ModelRecord>("SELECT * FROM models WHERE id = ?")
            .bind(id)
            .fetch_optional(store.pool())
            .await
            .map_err(StoreError::from)?,
    )
}

pub async fn list(store: &Store) -> Result<Vec<ModelRecord>, ModelError> {
    Ok(
        sqlx::query_as::<_, ModelRecord>("SELECT * FROM models ORDER BY created_at, id")
            .fetch_all(store.pool())
            .await
            .map_err(StoreError::from)?,
    )
}

/// Turn what the user typed (a registered id, a folder or a `.gguf` path) into a path.
pub async fn resolve(store: &Store, reference: &str) -> Result<PathBuf, ModelError> {
    let p = Path::new(reference);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    match get(store, reference).await? {
        Some(m) => Ok(PathBuf::from(m.path)),
        None => Err(ModelError::Unknown(reference.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_short_and_safe() {
        assert_eq!(
            slug("SmolLM2-135M-Instruct.Q4_1"),
            "smollm2-135m-instruct-q4-1"
        );
        assert_eq!(slug("  ..Weird__Name!! "), "weird-name");
        assert_eq!(slug("..."), "model");
    }

    #[tokio::test]
    async fn unknown_references_and_broken_models_are_user_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("w.db")).await.unwrap();
        let e = resolve(&store, "nope").await.unwrap_err().to_string();
        assert!(e.contains("no model `nope`"), "{e}");
        let folder = tmp.path().join("m");
        std::fs::create_dir(&folder).unwrap();
        let e = add(&store, tmp.path(), folder.to_str().unwrap(), |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json") && e.contains("missing"), "{e}");
        assert!(list(&store).await.unwrap().is_empty());
    }
}
