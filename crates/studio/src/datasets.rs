//! The dataset registry: files the user added, validated once, kept as a copy.
//!
//! Adding a dataset reads and checks every record (see `whetstone_data::dataset`), copies the
//! file into the data directory under its id (so a run can always be reproduced from the
//! exact bytes it trained on) and records the format, counts, problems and hash.

use crate::store::{Store, StoreError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use whetstone_data::{CsvColumns, Dataset, DatasetError, DatasetFormat, Problem};

#[derive(Debug, thiserror::Error)]
pub enum DatasetsError {
    #[error("{0}")]
    Data(#[from] DatasetError),
    #[error("{0}")]
    User(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DatasetsError {
    fn from(e: sqlx::Error) -> Self {
        DatasetsError::Store(e.into())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ts_rs::TS)]
#[ts(export)]
pub struct DatasetRecord {
    pub id: String,
    pub name: String,
    pub original_path: String,
    pub path: String,
    pub format: String,
    pub columns: Option<String>,
    #[ts(type = "number")]
    pub records: i64,
    #[ts(type = "number")]
    pub dropped: i64,
    /// JSON list of `{at, field, message}`.
    pub problems: String,
    #[ts(type = "number")]
    pub size_bytes: i64,
    pub sha256: String,
    pub created_at: String,
}

impl DatasetRecord {
    pub fn csv_columns(&self) -> Option<CsvColumns> {
        self.columns
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
    }

    pub fn format(&self) -> Option<DatasetFormat> {
        DatasetFormat::parse(&self.format)
    }

    /// Read the stored copy again (its records were valid when added; invalid ones are
    /// dropped as they were then).
    pub fn load(&self) -> Result<Dataset, DatasetsError> {
        Ok(whetstone_data::dataset::load(
            Path::new(&self.path),
            self.format(),
            self.csv_columns(),
            true,
        )?)
    }
}

/// Parse `prompt=question,response=answer` into a column mapping.
pub fn parse_columns(spec: &str) -> Result<CsvColumns, String> {
    let mut c = CsvColumns::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`--columns {spec}`: expected role=column pairs"))?;
        let v = Some(v.trim().to_string());
        match k.trim() {
            "prompt" | "instruction" => c.prompt = v,
            "response" | "output" => c.response = v,
            "system" => c.system = v,
            "text" => c.text = v,
            other => {
                return Err(format!(
                    "`--columns`: unknown role `{other}` (use prompt, response, system, text)"
                ))
            }
        }
    }
    Ok(c)
}

/// Validate and register a dataset file. Adding the same bytes again returns the record
/// that exists. Without `drop_invalid`, any invalid record refuses the file.
pub async fn add(
    store: &Store,
    datasets_dir: &Path,
    file: &Path,
    format: Option<DatasetFormat>,
    columns: Option<CsvColumns>,
    drop_invalid: bool,
) -> Result<(DatasetRecord, Dataset), DatasetsError> {
    let owned = file.to_path_buf();
    let (fmt, cols) = (format, columns.clone());
    let (dataset, sha) = tokio::task::spawn_blocking(move || {
        let d = whetstone_data::dataset::load(&owned, fmt, cols, drop_invalid)?;
        let sha = whetstone_formats::sha256_file(&owned)
            .map_err(|e| DatasetsError::User(e.to_string()))?;
        Ok::<_, DatasetsError>((d, sha))
    })
    .await
    .map_err(|e| DatasetsError::User(e.to_string()))??;
    let format_str = dataset.format.as_str();
    if let Some(existing) =
        sqlx::query_as::<_, DatasetRecord>("SELECT * FROM datasets WHERE sha256 = ? AND format = ?")
            .bind(&sha)
            .bind(format_str)
            .fetch_optional(store.pool())
            .await?
    {
        return Ok((existing, dataset));
    }
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    let base = crate::models::slug(&stem);
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "txt".into());
    std::fs::create_dir_all(datasets_dir)
        .map_err(|e| DatasetsError::User(format!("{}: {e}", datasets_dir.display())))?;
    let original = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let problems: Vec<&Problem> = dataset.dropped.iter().collect();
    // Claim an id with the row first (another process may be adding the same file or
    // another file with the same name right now), then put the copy in place.
    for n in 1..1000 {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let copy = datasets_dir.join(format!("{id}.{ext}"));
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO datasets (id, name, original_path, path, format, columns, records, dropped, problems, size_bytes, sha256)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&stem)
        .bind(original.to_string_lossy())
        .bind(copy.to_string_lossy())
        .bind(format_str)
        .bind(columns.as_ref().map(|c| serde_json::to_string(c).unwrap_or_default()))
        .bind(dataset.examples.len() as i64)
        .bind(dataset.dropped.len() as i64)
        .bind(serde_json::to_string(&problems).unwrap_or_else(|_| "[]".into()))
        .bind(size as i64)
        .bind(&sha)
        .execute(store.pool())
        .await?
        .rows_affected();
        if inserted == 0 {
            // the same bytes were registered meanwhile, or the id belongs to another file
            if let Some(existing) = sqlx::query_as::<_, DatasetRecord>(
                "SELECT * FROM datasets WHERE sha256 = ? AND format = ?",
            )
            .bind(&sha)
            .bind(format_str)
            .fetch_optional(store.pool())
            .await?
            {
                return Ok((existing, dataset));
            }
            continue;
        }
        let tmp = datasets_dir.join(format!(".{id}.{ext}.tmp"));
        if let Err(e) = std::fs::copy(file, &tmp).and_then(|_| std::fs::rename(&tmp, &copy)) {
            sqlx::query("DELETE FROM datasets WHERE id = ?")
                .bind(&id)
                .execute(store.pool())
                .await?;
            return Err(DatasetsError::User(format!(
                "{}: cannot copy into {}: {e}",
                file.display(),
                datasets_dir.display()
            )));
        }
        let rec = get(store, &id)
            .await?
            .ok_or_else(|| DatasetsError::User(format!("dataset `{id}` vanished")))?;
        return Ok((rec, dataset));
    }
    Err(DatasetsError::User(format!(
        "{}: no free dataset id for `{base}`",
        file.display()
    )))
}

pub async fn get(store: &Store, id: &str) -> Result<Option<DatasetRecord>, DatasetsError> {
    Ok(
        sqlx::query_as::<_, DatasetRecord>("SELECT * FROM datasets WHERE id = ?")
            .bind(id)
            .fetch_optional(store.pool())
            .await?,
    )
}

pub async fn list(store: &Store) -> Result<Vec<DatasetRecord>, DatasetsError> {
    Ok(
        sqlx::query_as::<_, DatasetRecord>("SELECT * FROM datasets ORDER BY created_at, id")
            .fetch_all(store.pool())
            .await?,
    )
}

/// A registered id, or a file (registered on the way, so every run names a stored copy).
pub async fn resolve(
    store: &Store,
    datasets_dir: &Path,
    reference: &str,
) -> Result<DatasetRecord, DatasetsError> {
    if let Some(r) = get(store, reference).await? {
        return Ok(r);
    }
    let p = PathBuf::from(reference);
    if p.is_file() {
        return Ok(add(store, datasets_dir, &p, None, None, false).await?.0);
    }
    Err(DatasetsError::User(format!(
        "no dataset `{reference}`: not a file or a registered dataset id (see `whetstone datasets list`)"
    )))
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct PreviewExample {
    /// `line 3`, `row 7`, …
    pub at: String,
    /// The text the model sees; with a model, trained spans are wrapped in ⟦ ⟧. For a
    /// preference pair, the prompt and the chosen answer.
    pub rendered: String,
    /// A preference pair's rejected answer (its prompt is the chosen one's).
    pub rejected: Option<String>,
    /// A rated answer's label (KTO): desirable or not.
    pub desirable: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct Inspection {
    pub problems: Vec<String>,
    pub preview: Vec<PreviewExample>,
    /// Token lengths through the model's template, when a model is given.
    pub stats: Option<whetstone_data::LengthStats>,
}

/// Preview and statistics of a registered dataset, optionally as a given model sees it.
pub fn inspect(
    rec: &DatasetRecord,
    model: Option<&Path>,
    seq_len: usize,
    n_preview: usize,
) -> Result<Inspection, DatasetsError> {
    let data = rec.load()?;
    let problems = data.dropped.iter().map(|p| p.to_string()).collect();
    let Some(model) = model else {
        let preview = data
            .examples
            .iter()
            .take(n_preview)
            .map(|(at, ex)| {
                use whetstone_data::Example;
                let (rendered, rejected, desirable) = match ex {
                    Example::Text { text } => (text.clone(), None, None),
                    Example::Chat { messages } => (lines(messages), None, None),
                    Example::Pair {
                        prompt,
                        chosen,
                        rejected,
                    } => (
                        format!("{}\n{}", lines(prompt), lines(chosen)),
                        Some(lines(rejected)),
                        None,
                    ),
                    Example::Rated {
                        prompt,
                        completion,
                        desirable,
                    } => (
                        format!("{}\n{}", lines(prompt), lines(completion)),
                        None,
                        Some(*desirable),
                    ),
                };
                PreviewExample {
                    at: at.to_string(),
                    rendered,
                    rejected,
                    desirable,
                }
            })
            .collect();
        return Ok(Inspection {
            problems,
            preview,
            stats: None,
        });
    };
    let source = whetstone_formats::ModelSource::open(model)
        .map_err(|e| DatasetsError::User(e.to_string()))?;
    let tok = &source.tokenizer;
    let template = source
        .chat_template
        .as_deref()
        .map(|t| {
            whetstone_data::ChatTemplate::new(
                t,
                tok.bos_token.as_deref().unwrap_or(""),
                tok.eos_token.as_deref().unwrap_or(""),
            )
        })
        .transpose()
        .map_err(|e| DatasetsError::User(format!("{}: chat template: {e}", model.display())))?;
    let eos = tok.eos_ids.first().copied();
    let mut lengths = vec![];
    let mut preview = vec![];
    for (at, ex) in &data.examples {
        let t = whetstone_data::tokenize_example(ex, template.as_ref(), &tok.inner, eos, false)
            .map_err(|e| DatasetsError::User(format!("{}: {at}: {e}", rec.original_path)))?;
        lengths.push((t.ids.len(), t.trained_count()));
        if preview.len() < n_preview {
            preview.push(PreviewExample {
                at: at.to_string(),
                rendered: marked(tok, &t.ids, &t.trained),
                rejected: t.pair.as_deref().map(|r| {
                    // the rejected answer alone: its prompt is the chosen one's
                    let s = r.trained.iter().position(|&x| x).unwrap_or(r.ids.len());
                    marked(tok, &r.ids[s..], &r.trained[s..])
                }),
                desirable: t.desirable,
            });
        }
    }
    Ok(Inspection {
        problems,
        preview,
        stats: Some(whetstone_data::length_stats(&lengths, seq_len)),
    })
}

/// Decode runs of equally-masked tokens, wrapping the learned ones in ⟦ ⟧.
fn marked(tok: &whetstone_formats::ModelTokenizer, ids: &[u32], trained: &[bool]) -> String {
    let mut out = String::new();
    let mut start = 0;
    for i in 1..=ids.len() {
        if i == ids.len() || trained[i] != trained[start] {
            let piece = tok.decode(&ids[start..i], false).unwrap_or_default();
            if trained[start] {
                out.push_str(&format!("⟦{piece}⟧"));
            } else {
                out.push_str(&piece);
            }
            start = i;
        }
    }
    out
}

/// Messages as `role: content` lines.
fn lines(messages: &[whetstone_data::ChatMessage]) -> String {
    messages
        .iter()
        .map(|m| format!("{}: {}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn add_copies_dedupes_and_reports_dropped_records() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("w.db")).await.unwrap();
        let f = tmp.path().join("qa.jsonl");
        std::fs::write(
            &f,
            "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\"}\n",
        )
        .unwrap();
        let dir = tmp.path().join("datasets");
        let e = add(&store, &dir, &f, None, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("output"), "{e}");
        let (r, d) = add(&store, &dir, &f, None, None, true).await.unwrap();
        assert_eq!((r.records, r.dropped, r.format.as_str()), (1, 1, "alpaca"));
        assert_eq!(d.examples.len(), 1);
        assert!(Path::new(&r.path).exists());
        let (again, _) = add(&store, &dir, &f, None, None, true).await.unwrap();
        assert_eq!(again.id, r.id);
        assert_eq!(list(&store).await.unwrap().len(), 1);
        assert_eq!(resolve(&store, &dir, "qa").await.unwrap().id, "qa");
        assert!(resolve(&store, &dir, "nope").await.is_err());
    }

    #[test]
    fn column_specs() {
        let c = parse_columns("prompt=q, response=a").unwrap();
        assert_eq!(c.prompt.as_deref(), Some("q"));
        assert_eq!(c.response.as_deref(), Some("a"));
        assert!(parse_columns("answer=a").is_err());
    }
}
