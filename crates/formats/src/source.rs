//! A model on disk, whatever its packaging: an HF folder or a single GGUF file.
//!
//! `ModelSource::open` reads everything but the weights (config, tokenizer, chat template,
//! special tokens) so listings and validation are cheap; `load_weights` does the heavy part.

use crate::config::ModelConfig;
use crate::error::{FileError, WithPath};
use crate::tokenizer::{tokenizer_from_gguf, ModelTokenizer};
use crate::weights::{self, Weights};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    HfFolder,
    Gguf,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::HfFolder => "hf_folder",
            SourceKind::Gguf => "gguf",
        }
    }
}

pub struct ModelSource {
    pub path: PathBuf,
    pub kind: SourceKind,
    pub name: String,
    pub config: ModelConfig,
    pub tokenizer: ModelTokenizer,
    pub chat_template: Option<String>,
    gguf: Option<gguf_file::Content>,
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Value, FileError> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|e| FileError::new(path, format!("not valid JSON: {e}")))
}

impl ModelSource {
    pub fn open(path: &Path) -> Result<Self, FileError> {
        if !path.exists() {
            return Err(FileError::new(path, "no such file or folder"));
        }
        if path.is_dir() {
            Self::open_folder(path)
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            Self::open_gguf(path)
        } else {
            Err(FileError::new(
                path,
                "not a model: expected an HF model folder (config.json + *.safetensors) or a .gguf file",
            ))
        }
    }

    fn open_folder(dir: &Path) -> Result<Self, FileError> {
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(FileError::new(
                &config_path,
                "missing: an HF model folder needs config.json",
            ));
        }
        let mut config = ModelConfig::from_hf_json(&config_path)?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(FileError::new(
                &tok_path,
                "missing: Whetstone reads fast tokenizers (tokenizer.json); save the tokenizer with transformers to create it",
            ));
        }
        let mut tokenizer = ModelTokenizer::from_file(&tok_path)?;
        tokenizer.check_fits(config.vocab_size, &tok_path)?;
        let mut chat_template = None;
        let tc_path = dir.join("tokenizer_config.json");
        if tc_path.exists() {
            let tc = read_json(&tc_path)?;
            chat_template = match tc.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: use "default".
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template").and_then(Value::as_str))
                    .map(str::to_string),
                _ => None,
            };
            tokenizer.bos_token = token_string(tc.get("bos_token"));
            tokenizer.eos_token = token_string(tc.get("eos_token"));
        }
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.exists() {
            chat_template = Some(std::fs::read_to_string(&jinja).at(&jinja)?);
        }
        let mut eos = config.eos_token_ids.clone();
        let gc_path = dir.join("generation_config.json");
        if gc_path.exists() {
            let gc = read_json(&gc_path)?;
            match gc.get("eos_token_id") {
                Some(Value::Array(a)) => {
                    eos.extend(a.iter().filter_map(|v| v.as_u64()).map(|n| n as u32))
                }
                Some(v) => eos.extend(v.as_u64().map(|n| n as u32)),
                None => {}
            }
        }
        if let Some(id) = tokenizer
            .eos_token
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t))
        {
            eos.push(id);
        }
        eos.sort_unstable();
        eos.dedup();
        tokenizer.eos_ids = eos.clone();
        config.eos_token_ids = eos;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Ok(Self {
            path: dir.to_path_buf(),
            kind: SourceKind::HfFolder,
            name,
            config,
            tokenizer,
            chat_template,
            gguf: None,
        })
    }

    fn open_gguf(path: &Path) -> Result<Self, FileError> {
        let content = weights::read_gguf(path)?;
        let factors = weights::gguf_rope_factors(path, &content)?;
        let config = ModelConfig::from_gguf(path, &content, factors)?;
        let tokenizer = tokenizer_from_gguf(path, &content)?;
        tokenizer
            .check_fits(config.vocab_size, path)
            .map_err(|e| FileError::new(path, format!("`tokenizer.ggml.tokens`: {}", e.message)))?;
        let chat_template = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let name = content
            .metadata
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into())
            });
        Ok(Self {
            path: path.to_path_buf(),
            kind: SourceKind::Gguf,
            name,
            config,
            tokenizer,
            chat_template,
            gguf: Some(content),
        })
    }

    /// The GGUF header, metadata and tensor table (GGUF sources only).
    pub fn gguf_content(&self) -> Option<&gguf_file::Content> {
        self.gguf.as_ref()
    }

    /// Load (and for GGUF dequantize) the weights into `dtype` on `device`.
    pub fn load_weights(&self, device: &Device, dtype: DType) -> Result<Weights, FileError> {
        self.load_weights_with(device, dtype, &mut weights::keep_all)
    }

    /// [`Self::load_weights`], passing each tensor through `hook` as it is read.
    pub fn load_weights_with(
        &self,
        device: &Device,
        dtype: DType,
        hook: weights::TensorHook<'_>,
    ) -> Result<Weights, FileError> {
        match &self.gguf {
            Some(content) => {
                weights::load_gguf(&self.path, content, &self.config, device, dtype, hook)
            }
            None => weights::load_safetensors(&self.path, device, dtype, hook),
        }
    }

    /// Check that the weight files are complete without loading them: GGUF tensor extents
    /// were checked on open; safetensors headers must parse and match the file lengths.
    pub fn check_weight_files(&self) -> Result<(), FileError> {
        if self.kind != SourceKind::HfFolder {
            return Ok(());
        }
        for file in weights::safetensors_files(&self.path)? {
            // SAFETY: the mapping is only read, and only for this check.
            unsafe { candle_core::safetensors::MmapedSafetensors::new(&file) }.map_err(|e| {
                FileError::new(&file, format!("not a complete safetensors file: {e}"))
            })?;
        }
        Ok(())
    }

    /// Tensor types of a GGUF source (`{"Q4_1": 210, ...}`), empty for folders.
    pub fn gguf_tensor_types(&self) -> std::collections::BTreeMap<String, usize> {
        self.gguf
            .as_ref()
            .map(weights::gguf_type_counts)
            .unwrap_or_default()
    }

    /// Bytes on disk (the GGUF file, or every file in the folder).
    pub fn size_on_disk(&self) -> u64 {
        if self.path.is_dir() {
            std::fs::read_dir(&self.path)
                .map(|d| {
                    d.filter_map(|e| e.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0)
        } else {
            std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
        }
    }
}
