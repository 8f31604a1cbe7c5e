//! When a run evaluates, saves and stops, as small rules the loop asks.

use crate::config::TrainConfig;

/// Evaluate every `eval_every` steps and save every `save_every` (0: never), and both at
/// the last step; a run that stops early saves too.
#[derive(Debug, Clone, Copy)]
pub struct Checkpointing {
    pub eval_every: u64,
    pub save_every: u64,
}

impl Checkpointing {
    pub fn from_config(cfg: &TrainConfig) -> Self {
        Self {
            eval_every: cfg.eval_every,
            save_every: cfg.save_every,
        }
    }

    pub fn eval_due(&self, step: u64, last: bool) -> bool {
        last || (self.eval_every > 0 && step.is_multiple_of(self.eval_every))
    }

    pub fn save_due(&self, step: u64, last: bool, stopping: bool) -> bool {
        last || stopping || (self.save_every > 0 && step.is_multiple_of(self.save_every))
    }
}

/// Stop once the eval loss has not improved for `patience` evaluations in a row (0: never).
#[derive(Debug, Clone, Copy)]
pub struct EarlyStopping {
    pub patience: usize,
}

impl EarlyStopping {
    pub fn from_config(cfg: &TrainConfig) -> Self {
        Self {
            patience: cfg.early_stopping_patience,
        }
    }

    pub fn should_stop(&self, evals_without_improvement: usize) -> bool {
        self.patience > 0 && evals_without_improvement >= self.patience
    }
}
