//! Training: batches in, updates out, events on the way.
//!
//! Synchronous; the caller runs [`train`] on its own thread and listens to [`TrainEvent`]s.
//! Everything that decides the loss curve — the trainable values, the optimizer moments,
//! the dropout stream and the data cursor — is in each checkpoint, so a run resumed from
//! one continues with the very losses the uninterrupted run had.
//!
//! - `run`: setting a run up and the step / evaluate / save loop;
//! - `step`: one optimizer step's gradients (forward and backward per micro-batch);
//! - `explicit`: that forward and backward written out over our own kernels, where it applies;
//! - `objective`: what is optimised ([`Objective`]; supervised fine-tuning today);
//! - `batch`: micro-batches and packing;
//! - `checkpoint`: saving and loading a run's state;
//! - `policy`: when to evaluate, save and stop;
//! - `events`: what a run reports and how it ends.

mod batch;
mod checkpoint;
mod events;
pub mod explicit;
mod objective;
mod policy;
pub mod preference;
mod run;
mod step;

pub use batch::{make_batch, pack, Batch};
pub use checkpoint::{find_checkpoint, peft_adapter_config, CheckpointState};
pub use events::{RunStatus, Summary, TrainData, TrainError, TrainEvent, TrainSpec};
pub use objective::{for_config as objective_for, LossSum, Metrics, Objective, Sft};
pub use policy::{Checkpointing, EarlyStopping};
pub use run::{eval_loss, train};
pub use step::{forward_backward, forward_backward_autograd};

#[cfg(test)]
pub(crate) mod tests;
