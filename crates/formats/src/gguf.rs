//! GGUF files (llama.cpp's single-file model format).
//!
//! A GGUF file is a header (magic `GGUF`, version, tensor count, metadata count), a list of
//! typed metadata key/values (`general.architecture`, `llama.block_count`,
//! `tokenizer.ggml.tokens`, ...), a list of tensor infos (name, dims, ggml type, offset) and
//! the aligned tensor data. Parsing of the container is candle's `gguf_file`; this module
//! turns it into the facts the rest of Whetstone asks about.

use candle_core::quantized::gguf_file;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable GGUF file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: metadata key `{key}` is missing or has the wrong type")]
    Metadata { path: PathBuf, key: String },
}

/// What a GGUF file says about itself, without loading any tensor data.
#[derive(Debug, Clone, Serialize)]
pub struct GgufSummary {
    pub architecture: String,
    pub name: Option<String>,
    pub tensor_count: usize,
    /// Number of tensors of each ggml type, e.g. `{"Q4_1": 210, "F32": 61, "Q8_0": 1}`.
    pub tensor_types: BTreeMap<String, usize>,
    /// Total number of weights (elements) over all tensors.
    pub parameter_count: u64,
    pub block_count: Option<u32>,
    pub embedding_length: Option<u32>,
    pub vocab_size: Option<usize>,
    pub has_chat_template: bool,
}

/// Read the header, metadata and tensor infos of a GGUF file.
pub fn read_content(path: &Path) -> Result<gguf_file::Content, GgufError> {
    let mut file = std::fs::File::open(path).map_err(|source| GgufError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    gguf_file::Content::read(&mut file).map_err(|e| GgufError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Summarise a GGUF file's metadata and tensor table.
pub fn summarize(path: &Path) -> Result<GgufSummary, GgufError> {
    let content = read_content(path)?;
    let md = &content.metadata;
    let architecture = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| GgufError::Metadata {
            path: path.to_path_buf(),
            key: "general.architecture".into(),
        })?;
    let arch_u32 = |suffix: &str| {
        md.get(&format!("{architecture}.{suffix}"))
            .and_then(|v| v.to_u32().ok())
    };
    let mut tensor_types = BTreeMap::new();
    let mut parameter_count = 0u64;
    for info in content.tensor_infos.values() {
        *tensor_types
            .entry(format!("{:?}", info.ggml_dtype).to_uppercase())
            .or_insert(0) += 1;
        parameter_count += info.shape.elem_count() as u64;
    }
    let vocab_size = md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .map(|v| v.len());
    Ok(GgufSummary {
        name: md
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned(),
        tensor_count: content.tensor_infos.len(),
        tensor_types,
        parameter_count,
        block_count: arch_u32("block_count"),
        embedding_length: arch_u32("embedding_length"),
        vocab_size,
        has_chat_template: md.contains_key("tokenizer.chat_template"),
        architecture,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_gguf_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.gguf");
        std::fs::write(&p, b"not a gguf file at all").unwrap();
        let e = summarize(&p).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("model.gguf") && msg.contains("not a readable GGUF"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        // Valid magic and version 3, then the file ends.
        std::fs::write(&p, [b'G', b'G', b'U', b'F', 3, 0, 0, 0]).unwrap();
        assert!(matches!(summarize(&p), Err(GgufError::Parse { .. })));
    }
}
