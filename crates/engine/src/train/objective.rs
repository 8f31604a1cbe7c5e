//! What a run optimises. An [`Objective`] turns a batch's final hidden states into a loss
//! sum and says how many terms that sum has; the step, the evaluation and gradient
//! recomputation all ask it, so a new objective (preference tuning) is one implementation
//! here and one line in [`for_config`].

use super::batch::Batch;
use crate::config::TrainConfig;
use crate::model::DecoderModel;
use crate::ops;
use candle_core::{DType, Result, Tensor};

pub trait Objective: Send + Sync {
    /// The name runs and events use (`sft`).
    fn name(&self) -> &'static str;
    /// The batch's loss summed over its terms, from the final hidden states `[b, t, h]`.
    fn loss_sum(&self, model: &DecoderModel, hidden: &Tensor, batch: &Batch) -> Result<Tensor>;
    /// How many terms [`Objective::loss_sum`] adds up: the mean loss of a step or an
    /// evaluation is the sum over its batches divided by the sum of these.
    fn terms(&self, batch: &Batch) -> usize;
}

/// Supervised fine-tuning: next-token negative log-likelihood over the trained positions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sft;

impl Objective for Sft {
    fn name(&self) -> &'static str {
        "sft"
    }

    fn loss_sum(&self, model: &DecoderModel, hidden: &Tensor, batch: &Batch) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, h))?.index_select(&batch.rows, 0)?;
        let logits = model.logits(&picked)?;
        let logits = match logits.dtype() {
            DType::F64 | DType::F32 => logits,
            _ => logits.to_dtype(DType::F32)?,
        };
        ops::cross_entropy_rows(&logits, &batch.targets)?.sum_all()
    }

    fn terms(&self, batch: &Batch) -> usize {
        batch.n_targets
    }
}

/// The objective a run's configuration asks for (supervised fine-tuning is the only one yet).
pub fn for_config(_cfg: &TrainConfig) -> Box<dyn Objective> {
    Box::new(Sft)
}
