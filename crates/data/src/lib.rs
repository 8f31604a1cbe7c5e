//! Datasets and the text a model actually sees.
//!
//! Import, validation, statistics, tokenization, loss masks, packing and splits land here;
//! so does chat-template rendering, because a template that renders differently from
//! transformers silently trains the model on the wrong text.

pub mod dataset;
mod namespace_check;
mod preference;
mod record;
pub mod template;
pub mod tokenize;

pub use dataset::{CsvColumns, Dataset, DatasetError, DatasetFormat, Example, Location, Problem};
pub use template::{ChatMessage, ChatTemplate, TemplateError};
pub use tokenize::{length_stats, tokenize_example, LengthStats, Tokenized};
