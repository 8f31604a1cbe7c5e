//! What a run reports while it trains, what it is given, and how it ends.

use crate::config::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use whetstone_data::Tokenized;
use whetstone_formats::ModelTokenizer;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ts_rs::TS)]
#[serde(tag = "event", rename_all = "snake_case")]
#[ts(export)]
pub enum TrainEvent {
    Started {
        /// 0, or the checkpoint's step when resuming.
        step: u64,
        total_steps: u64,
        train_records: usize,
        eval_records: usize,
        trainable_params: usize,
        total_params: usize,
        resumed_from: Option<u64>,
    },
    Step {
        step: u64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_s: f64,
        mem_bytes: u64,
        epoch: f64,
        /// Tokens trained on so far (padding excluded), for curves aligned by tokens.
        tokens: u64,
        /// The objective's metrics beyond the loss (SFT: `token_accuracy`), step means.
        #[serde(default)]
        metrics: super::Metrics,
    },
    Eval {
        step: u64,
        eval_loss: f64,
        perplexity: f64,
        /// The objective's metrics over the eval split.
        #[serde(default)]
        metrics: super::Metrics,
    },
    Sample {
        step: u64,
        prompt: String,
        text: String,
    },
    Checkpoint {
        step: u64,
        path: String,
        best: bool,
    },
    Log {
        step: u64,
        level: String,
        message: String,
    },
    Finished {
        step: u64,
        status: RunStatus,
        summary: Summary,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum RunStatus {
    Completed,
    Cancelled,
    /// The loss became NaN or infinite; nothing after the last checkpoint was kept.
    Diverged,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Diverged => "diverged",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ts_rs::TS)]
#[ts(export)]
pub struct Summary {
    pub steps_done: u64,
    pub total_steps: u64,
    pub first_eval_loss: Option<f64>,
    pub last_eval_loss: Option<f64>,
    pub best_eval_loss: Option<f64>,
    pub best_step: Option<u64>,
    pub final_train_loss: Option<f64>,
    pub tokens_per_s: f64,
    pub peak_mem_bytes: u64,
    pub elapsed_s: f64,
    pub trainable_params: usize,
    pub total_params: usize,
    pub stopped_early: bool,
    pub message: Option<String>,
}

/// Tokenized examples, already split.
pub struct TrainData {
    pub train: Vec<Tokenized>,
    pub eval: Vec<Tokenized>,
}

pub struct TrainSpec<'a> {
    pub config: TrainConfig,
    pub data: TrainData,
    /// Where checkpoints go (`<run_dir>/checkpoints/{last,best}`).
    pub run_dir: PathBuf,
    /// Continue from this checkpoint folder.
    pub resume_from: Option<PathBuf>,
    pub cancel: Arc<AtomicBool>,
    /// For `Sample` events.
    pub tokenizer: Option<&'a ModelTokenizer>,
    /// Write the gradients of the first optimizer step (and its batch) here, then stop.
    pub dump_first_grads: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Io(String),
}
