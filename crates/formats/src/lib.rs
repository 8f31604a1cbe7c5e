//! Model and adapter file formats.
//!
//! Everything that touches bytes on disk in a format another tool defines lives here:
//! GGUF (llama.cpp), safetensors / HF model folders and PEFT adapter folders. The crate
//! knows nothing about training or the database.

pub mod gguf;
pub mod hash;

pub use gguf::{GgufError, GgufSummary};
pub use hash::{sha256_file, HashError};
