//! Datasets and the text a model actually sees.
//!
//! Import, validation, statistics, tokenization, loss masks, packing and splits land here;
//! so does chat-template rendering, because a template that renders differently from
//! transformers silently trains the model on the wrong text.

pub mod template;

pub use template::{ChatMessage, ChatTemplate, TemplateError};
