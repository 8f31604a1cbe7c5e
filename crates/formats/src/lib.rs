//! Model and adapter file formats.
//!
//! Everything that touches bytes on disk in a format another tool defines lives here:
//! GGUF (llama.cpp), safetensors / HF model folders, tokenizers and PEFT adapter folders.
//! The crate knows nothing about training or the database.

pub mod config;
pub mod error;
pub mod gguf;
pub mod gguf_out;
pub mod hash;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use config::{Activation, Family, ModelConfig, RopeScaling};
pub use error::{FileError, WithPath};
pub use gguf::{GgufError, GgufSummary};
pub use hash::{sha256_file, HashError};
pub use source::{ModelSource, SourceKind};
pub use tokenizer::ModelTokenizer;
pub use weights::Weights;
