//! Model downloads from the Hugging Face hub (or any server speaking its API, e.g. a mirror
//! set with `HF_ENDPOINT`), with hf-hub.
//!
//! Only what Whetstone reads is fetched (config, tokenizer, generation config, safetensors
//! shards and their index), into `models/hub/<owner>--<name>/` in the data directory.
//! hf-hub writes each file to a temporary name and renames it, and skips files already
//! complete, so an interrupted download resumes where it stopped.

use hf_hub::progress::{DownloadEvent, FileStatus, ProgressEvent, ProgressHandler};
use hf_hub::HFClient;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Files an HF model folder needs for Whetstone (everything else in a repo is skipped).
pub const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "*.safetensors",
    "model.safetensors.index.json",
];

/// What a download reports as it goes: bytes done of bytes total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownloadProgress {
    pub files_total: usize,
    pub files_done: usize,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

struct Reporter<F: Fn(DownloadProgress) + Send + Sync> {
    state: Mutex<(DownloadProgress, std::collections::HashMap<String, u64>)>,
    report: F,
}

impl<F: Fn(DownloadProgress) + Send + Sync> ProgressHandler for Reporter<F> {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(ev) = event else {
            return;
        };
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let (p, per_file) = &mut *guard;
        match ev {
            DownloadEvent::Start {
                total_files,
                total_bytes,
            } => {
                p.files_total = *total_files;
                p.bytes_total = *total_bytes;
            }
            DownloadEvent::Progress { files } => {
                for f in files {
                    per_file.insert(f.filename.clone(), f.bytes_completed);
                    if f.status == FileStatus::Complete {
                        p.files_done += 1;
                    }
                }
                p.bytes_done = per_file.values().sum();
            }
            DownloadEvent::AggregateProgress {
                bytes_completed, ..
            } => p.bytes_done = *bytes_completed,
            _ => {}
        }
        (self.report)(*p);
    }
}

/// `owner/name` from `hf:owner/name` (or `owner/name`), checked for shape.
pub fn parse_repo_id(reference: &str) -> Result<(String, String), String> {
    let id = reference.strip_prefix("hf:").unwrap_or(reference);
    match id.split_once('/') {
        Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((o.to_string(), n.to_string()))
        }
        _ => Err(format!(
            "`{reference}` is not a hub model id: expected hf:owner/name"
        )),
    }
}

/// Download a model repo's files into `models_dir/hub/<owner>--<name>/` and return that folder.
/// `endpoint` overrides the hub URL (else `HF_ENDPOINT`, else huggingface.co).
pub async fn download_model(
    reference: &str,
    models_dir: &Path,
    endpoint: Option<&str>,
    report: impl Fn(DownloadProgress) + Send + Sync + 'static,
) -> Result<PathBuf, String> {
    let (owner, name) = parse_repo_id(reference)?;
    let mut builder = HFClient::builder().retry_max_attempts(3);
    if let Some(e) = endpoint {
        builder = builder.endpoint(e);
    }
    let client = builder
        .build()
        .map_err(|e| format!("{reference}: cannot set up the hub client: {e}"))?;
    let dest = models_dir.join("hub").join(format!("{owner}--{name}"));
    let handler = Arc::new(Reporter {
        state: Mutex::new(Default::default()),
        report,
    });
    client
        .model(owner.as_str(), name.as_str())
        .snapshot_download()
        .allow_patterns(MODEL_FILES.iter().map(|s| s.to_string()).collect())
        .local_dir(dest.clone())
        .max_workers(4)
        .progress(handler)
        .send()
        .await
        .map_err(|e| {
            format!(
                "{reference}: download from {} failed: {e}",
                client.endpoint()
            )
        })?;
    if !dest.join("config.json").exists() {
        return Err(format!(
            "{reference}: the repository has no config.json; it is not a transformers model"
        ));
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_parse() {
        assert_eq!(
            parse_repo_id("hf:HuggingFaceTB/SmolLM2-135M").unwrap(),
            ("HuggingFaceTB".into(), "SmolLM2-135M".into())
        );
        assert!(parse_repo_id("hf:justaname").is_err());
        assert!(parse_repo_id("hf:a/b/c").is_err());
    }
}
