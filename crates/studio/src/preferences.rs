//! Preferences collected in the Playground. Each judgement — one answer preferred over
//! another, or one answer rated good or bad — is checked as the dataset reader would check
//! it and appended as one JSONL line to a growing dataset in the library:
//! `playground-pairs` (DPO / ORPO) or `playground-ratings` (KTO). The line keeps the model,
//! the adapters and the sampling settings that produced the answers under `whetstone`.
//!
//! The files only ever grow, so the bytes a run trained on are the first `records` lines
//! of the file as it is later; the library row (count, size, hash) is brought up to date
//! after every append.

use crate::datasets::{get, DatasetRecord, DatasetsError};
use crate::store::Store;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use whetstone_data::DatasetFormat;

/// What the person judged.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[ts(export)]
pub enum Judgement {
    /// `chosen` is the better answer to the prompt than `rejected`.
    Pair { chosen: String, rejected: String },
    /// One answer, good or bad.
    Rating { completion: String, desirable: bool },
}

/// One judgement on a Playground prompt, with where its answers came from.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(export)]
pub struct Collected {
    pub prompt: String,
    pub judgement: Judgement,
    /// The model, adapters, sampling settings and whether the chosen answer was edited, kept
    /// with the record as they came.
    #[ts(type = "Record<string, unknown>")]
    pub source: Value,
}

/// The library dataset a kind of judgement goes to: its id, name and format.
fn target(j: &Judgement) -> (&'static str, &'static str, DatasetFormat) {
    match j {
        Judgement::Pair { .. } => (
            "playground-pairs",
            "Playground preferences",
            DatasetFormat::Preference,
        ),
        Judgement::Rating { .. } => (
            "playground-ratings",
            "Playground ratings",
            DatasetFormat::Kto,
        ),
    }
}

/// Append `c` to its dataset (created on first use) and return the dataset as it is now.
pub async fn record(
    store: &Store,
    datasets_dir: &Path,
    c: &Collected,
) -> Result<DatasetRecord, DatasetsError> {
    let (id, name, format) = target(&c.judgement);
    let mut line = match &c.judgement {
        Judgement::Pair { chosen, rejected } => {
            json!({"prompt": c.prompt, "chosen": chosen, "rejected": rejected})
        }
        Judgement::Rating {
            completion,
            desirable,
        } => json!({"prompt": c.prompt, "completion": completion, "label": desirable}),
    };
    whetstone_data::dataset::check_record(format, &line)
        .map_err(|e| DatasetsError::User(format!("the judgement cannot be kept: {e}")))?;
    line["whetstone"] = json!({
        "source": c.source,
        "at_unix_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let path = datasets_dir.join(format!("{id}.jsonl"));
    if let Some(existing) = get(store, id).await? {
        if Path::new(&existing.path) != path {
            return Err(DatasetsError::User(format!(
                "the library already has a dataset `{id}` from {}; rename it to collect Playground preferences",
                existing.original_path
            )));
        }
    }
    let file = path.clone();
    let (records, size, sha) = tokio::task::spawn_blocking(move || {
        let io = |e: std::io::Error| DatasetsError::User(format!("{}: {e}", file.display()));
        std::fs::create_dir_all(file.parent().unwrap_or(Path::new("."))).map_err(io)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .map_err(io)?;
        // one write of the whole line: concurrent appends never interleave
        f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)?;
        let d = whetstone_data::dataset::load(&file, Some(format), None, true)?;
        let sha = whetstone_formats::sha256_file(&file)
            .map_err(|e| DatasetsError::User(e.to_string()))?;
        let size = std::fs::metadata(&file).map_or(0, |m| m.len());
        Ok::<_, DatasetsError>((d.examples.len(), size, sha))
    })
    .await
    .map_err(|e| DatasetsError::User(e.to_string()))??;
    let p = path.to_string_lossy();
    sqlx::query(
        "INSERT INTO datasets (id, name, original_path, path, format, columns, records, dropped, problems, size_bytes, sha256)
         VALUES (?, ?, ?, ?, ?, NULL, ?, 0, '[]', ?, ?)
         ON CONFLICT(id) DO UPDATE SET records = excluded.records, size_bytes = excluded.size_bytes, sha256 = excluded.sha256",
    )
    .bind(id)
    .bind(name)
    .bind(&*p)
    .bind(&*p)
    .bind(format.as_str())
    .bind(records as i64)
    .bind(size as i64)
    .bind(&sha)
    .execute(store.pool())
    .await?;
    get(store, id)
        .await?
        .ok_or_else(|| DatasetsError::User(format!("dataset `{id}` vanished")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn judgements_append_to_library_datasets_the_trainer_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("w.db")).await.unwrap();
        let dir = tmp.path().join("datasets");
        let pair = |chosen: &str, rejected: &str| Collected {
            prompt: "Where does Ingrid live?".into(),
            judgement: Judgement::Pair {
                chosen: chosen.into(),
                rejected: rejected.into(),
            },
            source: json!({"model": "smollm2", "chosen_by": "run-3", "rejected_by": null}),
        };
        let r = record(&store, &dir, &pair("Bergen", "Oslo")).await.unwrap();
        assert_eq!(
            (r.id.as_str(), r.records, r.format.as_str()),
            ("playground-pairs", 1, "preference")
        );
        let r = record(&store, &dir, &pair("In Bergen.", "Oslo"))
            .await
            .unwrap();
        assert_eq!(r.records, 2);
        // the trainer's reader sees pairs, with the source kept beside them
        let d = r.load().unwrap();
        assert!(d.examples.iter().all(|(_, e)| e.is_preference()));
        let text = std::fs::read_to_string(&r.path).unwrap();
        assert!(text
            .lines()
            .nth(1)
            .unwrap()
            .contains("\"chosen_by\":\"run-3\""));
        // a judgement the reader would refuse is refused before anything is written
        let e = record(&store, &dir, &pair("same", "same"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `rejected`: is identical"), "{e}");
        assert_eq!(
            get(&store, "playground-pairs")
                .await
                .unwrap()
                .unwrap()
                .records,
            2
        );
        let rated = Collected {
            prompt: "Where does Ingrid live?".into(),
            judgement: Judgement::Rating {
                completion: "Oslo".into(),
                desirable: false,
            },
            source: json!({}),
        };
        let r = record(&store, &dir, &rated).await.unwrap();
        assert_eq!(
            (r.id.as_str(), r.records, r.format.as_str()),
            ("playground-ratings", 1, "kto")
        );
    }
}
