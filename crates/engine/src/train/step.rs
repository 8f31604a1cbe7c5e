//! One optimizer step's gradients: forward and backward of each micro-batch (optionally
//! with layer recomputation), accumulated in the wide dtype.

use super::batch::Batch;
use super::objective::{add_metrics, mean_metrics, Metrics, Objective};
use crate::model::DecoderModel;
use crate::ops::Ops;
use crate::params::Param;
use candle_core::{DType, Tensor, Var};

fn add_grads(
    params: &[Param],
    store: &candle_core::backprop::GradStore,
    acc: &mut [Option<Tensor>],
) -> candle_core::Result<()> {
    for (i, p) in params.iter().enumerate() {
        if let Some(g) = store.get(p.var.as_tensor()) {
            // half-precision gradients are summed in f32, as the optimizer's masters are
            let g = g.to_dtype(crate::dtype::wide_dtype(g.dtype()))?;
            acc[i] = Some(match acc[i].take() {
                Some(a) => (a + g)?,
                None => g,
            });
        }
    }
    Ok(())
}

/// Forward and backward of one micro-batch, the objective's loss divided by `denom` (the
/// step's term count). Adds the parameter gradients to `acc`; returns the loss sum and the
/// metric sums. Runs on the explicit path where it applies ([`super::explicit`]), through
/// candle's autograd otherwise ([`forward_backward_autograd`]).
pub fn forward_backward(
    model: &DecoderModel,
    params: &[Param],
    objective: &dyn Objective,
    batch: &Batch,
    denom: f64,
    checkpointing: bool,
    acc: &mut [Option<Tensor>],
) -> candle_core::Result<(f64, Metrics)> {
    if super::explicit::unsupported(model, params, objective).is_none() {
        return super::explicit::forward_backward(
            model,
            params,
            objective,
            batch,
            denom,
            checkpointing,
            acc,
        );
    }
    forward_backward_autograd(model, params, objective, batch, denom, checkpointing, acc)
}

/// [`forward_backward`] through candle's autograd, for every model and method (the
/// reference the explicit path is tested against).
///
/// With `checkpointing`, layer outputs are not kept: each layer is recomputed during the
/// backward pass from its saved input (replaying the same dropout masks), trading one extra
/// forward for the activation memory of all but one layer.
pub fn forward_backward_autograd(
    model: &DecoderModel,
    params: &[Param],
    objective: &dyn Objective,
    batch: &Batch,
    denom: f64,
    checkpointing: bool,
    acc: &mut [Option<Tensor>],
) -> candle_core::Result<(f64, Metrics)> {
    let ops = Ops::Differentiable;
    if !checkpointing {
        let h = model.hidden_states(&batch.input, 0, None, ops)?;
        let out = objective.loss_sum(model, &h, batch)?;
        let value = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let store = (out.loss / denom)?.backward()?;
        add_grads(params, &store, acc)?;
        return Ok((value, out.metrics));
    }
    let t = batch.input.dim(1)?;
    let (x0, start, lead) = model.layer_input(&batch.input, 0)?;
    let rope = model.rope_tables(start, x0.dim(1)?)?;
    // prefix tuning: each layer's prefix keys/values, still connected to their parameters,
    // so every replayed layer sends its share of their gradient back
    let prefix = model.prefix_cache(batch.input.dim(0)?)?;
    let slot = |l: usize| prefix.as_ref().map(|c| c.layer(l));
    let mut x = x0.detach();
    let mut inputs = Vec::with_capacity(model.layers.len());
    let mut rng_at = Vec::with_capacity(model.layers.len());
    for l in 0..model.layers.len() {
        inputs.push(x.clone());
        rng_at.push(model.mode.rng_state());
        x = model
            .layer_forward(l, &x, &rope, start, slot(l).as_mut(), ops)?
            .detach();
    }
    let rng_after = model.mode.rng_state();
    let leaf = Var::from_tensor(&x)?;
    let last = leaf.as_tensor().narrow(1, lead, t)?;
    let out = objective.loss_sum(model, &model.final_norm(&last, ops)?, batch)?;
    let value = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let store = (out.loss / denom)?.backward()?;
    add_grads(params, &store, acc)?;
    let mut grad_out = store
        .get(leaf.as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("no gradient reached the last layer".into()))?;
    for l in (0..model.layers.len()).rev() {
        let input = Var::from_tensor(&inputs[l])?;
        model.mode.set_rng_state(rng_at[l]);
        let out = model.layer_forward(l, input.as_tensor(), &rope, start, slot(l).as_mut(), ops)?;
        let store = (out * &grad_out)?.sum_all()?.backward()?;
        add_grads(params, &store, acc)?;
        grad_out = match store.get(input.as_tensor()) {
            Some(g) => g.clone(),
            None => grad_out.zeros_like()?,
        };
    }
    let prompt_id = model.prompt.as_ref().map(|p| p.id());
    if params.iter().any(|p| {
        let id = p.var.as_tensor().id();
        id == model.embed_tokens.id() || Some(id) == prompt_id
    }) {
        let store = (model.layer_input(&batch.input, 0)?.0 * &grad_out)?
            .sum_all()?
            .backward()?;
        add_grads(params, &store, acc)?;
    }
    model.mode.set_rng_state(rng_after);
    Ok((value, out.metrics))
}

/// What one optimizer step computed: the mean loss, the mean of each metric, and the
/// gradients (one per parameter, accumulated in the wide dtype).
pub(super) struct StepOutput {
    pub loss: f64,
    pub metrics: Metrics,
    pub grads: Vec<Tensor>,
}

/// The gradients of one optimizer step over `batches`, with the mean loss: each
/// micro-batch's loss is divided by the step's total term count, so accumulation over
/// micro-batches gives the gradient of the mean.
pub(super) fn step_gradients(
    model: &DecoderModel,
    params: &[Param],
    objective: &dyn Objective,
    batches: &[Batch],
    checkpointing: bool,
) -> candle_core::Result<StepOutput> {
    let denom: usize = batches.iter().map(|b| objective.terms(b)).sum();
    let mut acc: Vec<Option<Tensor>> = vec![None; params.len()];
    let mut loss_sum = 0f64;
    let mut metrics = Metrics::new();
    if denom > 0 {
        for b in batches.iter().filter(|b| objective.terms(b) > 0) {
            let (loss, m) = forward_backward(
                model,
                params,
                objective,
                b,
                denom as f64,
                checkpointing,
                &mut acc,
            )?;
            loss_sum += loss;
            add_metrics(&mut metrics, &m);
        }
    }
    let grads = acc
        .into_iter()
        .zip(params)
        .map(|(g, p)| g.map_or_else(|| p.var.zeros_like(), Ok))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(StepOutput {
        loss: loss_sum / denom.max(1) as f64,
        metrics: mean_metrics(metrics, denom),
        grads,
    })
}
