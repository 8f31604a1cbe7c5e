//! What a run optimises. An [`Objective`] turns a batch's final hidden states into a loss
//! sum (and sums of its named metrics) and says how many terms those sums have; the step,
//! the evaluation and gradient recomputation all ask it, so a new objective (preference
//! tuning) is one implementation here, one [`ObjectiveKind`] variant and one line in
//! [`for_config`]. Its metrics travel as a map on the step and eval events and are stored
//! by name, so a new metric needs no schema change.

use super::batch::{make_batch, Batch};
use crate::config::{ObjectiveKind, TrainConfig};
use crate::model::DecoderModel;
use crate::ops;
use candle_core::{DType, Device, Result, Tensor, D};
use whetstone_data::Tokenized;

/// Metrics beyond the loss, by name (`token_accuracy`, ...).
pub type Metrics = std::collections::BTreeMap<String, f64>;

/// A batch's loss summed over its terms, with each metric summed over the same terms.
pub struct LossSum {
    pub loss: Tensor,
    pub metrics: Metrics,
}

pub trait Objective: Send + Sync {
    /// The name runs and events use (`sft`).
    fn name(&self) -> &'static str;
    /// One micro-batch from tokenized rows, for the step and the evaluation alike (SFT:
    /// rows padded right, the trained positions and their next tokens).
    fn batch(&self, rows: &[&Tokenized], device: &Device) -> Result<Batch> {
        make_batch(rows, device)
    }
    /// The batch's loss (and metrics) summed over its terms, from the final hidden states
    /// `[b, t, h]`.
    fn loss_sum(&self, model: &DecoderModel, hidden: &Tensor, batch: &Batch) -> Result<LossSum>;
    /// How many terms [`Objective::loss_sum`] adds up: the mean loss of a step or an
    /// evaluation is the sum over its batches divided by the sum of these.
    fn terms(&self, batch: &Batch) -> usize;
    /// The loss (and metrics) from each target's NLL `[targets]`, for an objective whose
    /// loss depends on the final hidden states only through those: the explicit path
    /// computes the NLLs itself and differentiates this small function for each target's
    /// gradient scale. `None` when it needs more (SFT has its own explicit loss).
    fn loss_from_nll(&self, _nll: &Tensor, _batch: &Batch) -> Option<Result<LossSum>> {
        None
    }
    /// Whether [`Objective::loss_from_nll`] gives this objective's loss.
    fn nll_is_enough(&self) -> bool {
        false
    }
}

/// Supervised fine-tuning: next-token negative log-likelihood over the trained positions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sft;

impl Objective for Sft {
    fn name(&self) -> &'static str {
        "sft"
    }

    fn loss_sum(&self, model: &DecoderModel, hidden: &Tensor, batch: &Batch) -> Result<LossSum> {
        let (b, t, h) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, h))?.index_select(&batch.rows, 0)?;
        let logits = model.logits(&picked)?;
        let logits = match logits.dtype() {
            DType::F64 | DType::F32 => logits,
            _ => logits.to_dtype(DType::F32)?,
        };
        // the share of trained positions whose most likely token is the target
        let hits = logits
            .detach()
            .argmax(D::Minus1)?
            .eq(&batch.targets.to_dtype(DType::U32)?)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        Ok(LossSum {
            loss: ops::cross_entropy_rows(&logits, &batch.targets)?.sum_all()?,
            metrics: Metrics::from([("token_accuracy".to_string(), hits)]),
        })
    }

    fn terms(&self, batch: &Batch) -> usize {
        batch.n_targets
    }
}

/// The objective a run's configuration asks for (`objective`): supervised fine-tuning, or
/// one of the preference objectives ([`super::preference`]).
pub fn for_config(cfg: &TrainConfig) -> Box<dyn Objective> {
    match cfg.objective {
        ObjectiveKind::Sft => Box::new(Sft),
        _ => super::preference::objective(cfg).unwrap_or_else(|| Box::new(Sft)),
    }
}

/// Add `m` into `into`, by name.
pub(super) fn add_metrics(into: &mut Metrics, m: &Metrics) {
    for (k, v) in m {
        *into.entry(k.clone()).or_insert(0.0) += v;
    }
}

/// Sums over `terms` as means.
pub(super) fn mean_metrics(m: Metrics, terms: usize) -> Metrics {
    m.into_iter()
        .map(|(k, v)| (k, v / terms.max(1) as f64))
        .collect()
}
