//! The explicit training path: the step's forward and backward written out layer by layer
//! over plain f32 buffers and our own kernels (blocked gemm, flash-style attention, fused
//! output projection + cross-entropy), instead of candle's autograd over the whole decoder.
//!
//! It runs where it computes exactly what the autograd path computes (see [`unsupported`]):
//! f32 on the CPU, the plain pre-norm decoder, adapters that supply explicit pieces (LoRA,
//! LoRA+, QLoRA, DoRA) or a trainable base (Full, Freeze, BitFit), supervised fine-tuning or
//! an objective whose loss is a function of the targets' NLL (DPO, KTO, ORPO on answers):
//! the path computes those NLLs, differentiates the objective's small function of them with
//! candle, and runs the fused output projection's backward with one scale per target.
//! Everything else, and `WHETSTONE_TRAIN_PATH=autograd`,
//! takes the autograd path, which stays the reference the tests compare against.

mod layer;

use super::batch::Batch;
use super::objective::{Metrics, Objective};
use crate::kernels::attention::Dims;
use crate::kernels::gemm::Mat;
use crate::kernels::{pool, rows, view, with_f32, xent};
use crate::linear::Grads;
use crate::model::DecoderModel;
use crate::params::Param;
use candle_core::{DType, Device, Result, Tensor};
use layer::{values, Shape};

/// Why the explicit path cannot run this step, or `None` when it can.
pub fn unsupported(
    model: &DecoderModel,
    params: &[Param],
    objective: &dyn Objective,
) -> Option<String> {
    if std::env::var("WHETSTONE_TRAIN_PATH").is_ok_and(|v| v == "autograd") {
        return Some("WHETSTONE_TRAIN_PATH=autograd".into());
    }
    let checks = [
        (!matches!(model.device, Device::Cpu), "not on the CPU"),
        (model.dtype != DType::F32, "not f32"),
        (
            objective.name() != "sft" && !objective.nll_is_enough(),
            "an objective that needs more than the targets' NLL (ORPO over whole rows)",
        ),
        (
            model.prompt.is_some() || model.prefix.is_some(),
            "virtual tokens",
        ),
        (
            model.layers.iter().any(|l| l.adapters.is_some()),
            "bottleneck adapters",
        ),
    ];
    if let Some((_, why)) = checks.iter().find(|(bad, _)| *bad) {
        return Some(why.to_string());
    }
    if let Some(why) = crate::model::beyond_plain_decoder(&model.config) {
        return Some(why.into());
    }
    // every adapter has explicit pieces, and they and the base tensors the path can
    // differentiate (weights, biases, norms, embeddings, output head) cover every
    // trainable parameter
    let mut covered = std::collections::HashSet::new();
    let base = [
        Some(&model.embed_tokens),
        model.lm_head.as_ref(),
        Some(&model.norm),
    ];
    covered.extend(base.into_iter().flatten().map(|t| t.id()));
    for layer in &model.layers {
        covered.insert(layer.input_layernorm.id());
        covered.insert(layer.post_attention_layernorm.id());
        for lin in linears(layer) {
            if let crate::linear::BaseWeight::Dense(w) = &lin.weight {
                covered.insert(w.id());
            }
            covered.extend(lin.bias.iter().map(|b| b.id()));
            match &lin.adapter {
                None => {}
                Some(a) => match a.explicit() {
                    Some(e) => covered.extend(e.params().iter().map(|t| t.id())),
                    None => return Some("an adapter without explicit pieces".into()),
                },
            }
        }
    }
    if params
        .iter()
        .any(|p| !covered.contains(&p.var.as_tensor().id()))
    {
        return Some("a trainable tensor outside the adapters".into());
    }
    None
}

fn linears(l: &crate::model::Layer) -> Vec<&crate::linear::Linear> {
    let (a, m) = (&l.self_attn, &l.mlp);
    let mut v = vec![&a.q_proj, &a.o_proj, &m.gate_proj, &m.down_proj];
    v.extend(a.k_proj.iter().chain(&a.v_proj).chain(&m.up_proj));
    v
}

/// What the backward pass gets of one layer's forward pass.
enum Kept {
    All(Box<layer::LayerSaved>),
    /// Gradient checkpointing: the layer's input and the dropout stream's state before it.
    Input(pool::Buf, u64),
}

/// Forward and backward of one micro-batch on the explicit path, as
/// [`super::step::forward_backward`]: the loss divided by `denom`, parameter gradients added
/// to `acc`, the loss sum and metric sums returned. With `checkpointing`, a layer keeps only
/// its input and is recomputed in the backward pass (with the same dropout masks).
pub fn forward_backward(
    model: &DecoderModel,
    params: &[Param],
    objective: &dyn Objective,
    batch: &Batch,
    denom: f64,
    checkpointing: bool,
    acc: &mut [Option<Tensor>],
) -> Result<(f64, Metrics)> {
    let (sh, (cos, sin), mut x, ids) = prologue(model, batch)?;
    let (n, h) = (sh.n, sh.hidden);
    let c = &model.config;

    // each layer's saved activations, or with checkpointing only its input and the dropout
    // stream's state there: the backward pass replays the layer's forward from them
    let mut saved = Vec::with_capacity(model.layers.len());
    for l in 0..model.layers.len() {
        if checkpointing {
            let rng = model.mode.rng_state();
            let mut input = pool::take(x.len());
            input.copy_from_slice(&x);
            let (out, _) = layer::forward(model, l, x, sh, (&cos, &sin))?;
            saved.push(Kept::Input(input, rng));
            x = out;
        } else {
            let (out, s) = layer::forward(model, l, x, sh, (&cos, &sin))?;
            saved.push(Kept::All(Box::new(s)));
            x = out;
        }
    }
    let rng_after = model.mode.rng_state();

    // final norm, the trained rows, fused projection + cross-entropy
    let w_norm = values(&model.norm)?;
    let mut hf = pool::take(n * h);
    let mut rstd = pool::take(n);
    rows::rms_norm(&x, &w_norm, c.rms_norm_eps as f32, &mut hf, &mut rstd);
    let picked = batch.rows.to_vec1::<u32>()?;
    let targets = batch.targets.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let mut hp = Vec::with_capacity(picked.len() * h);
    for &r in &picked {
        hp.extend_from_slice(&hf[r as usize * h..(r as usize + 1) * h]);
    }
    drop(hf);
    let mut dhp = pool::take(picked.len() * h);
    let mut grads = Grads::for_params(params.iter().map(|p| p.var.as_tensor()));
    let head = model.lm_head.as_ref().unwrap_or(&model.embed_tokens);
    let mut dhead = grads.trains(head).then(|| std::mem::take(grads.of(head)));
    // SFT: the mean NLL, one scale for every target. Another objective: the targets' NLLs
    // first, then its loss of them, differentiated for one scale per target.
    let preference = match objective.name() {
        "sft" => None,
        _ => Some(loss_of_target_nll(
            objective, head, &hp, &targets, batch, denom,
        )?),
    };
    let scale = match &preference {
        Some((_, _, scales)) => xent::Scale::Each(scales),
        None => xent::Scale::All((1.0 / denom) as f32),
    };
    let sums = with_f32(head, |d, l| {
        let w: Mat = view(d, l)?;
        Ok(xent::linear_cross_entropy(
            &hp,
            w,
            &targets,
            scale,
            Some(&mut dhp),
            dhead.as_deref_mut(),
        ))
    })?;
    if let Some(g) = dhead {
        *grads.of(head) = g;
    }
    let mut dhf = pool::zeros(n * h);
    for (k, &r) in picked.iter().enumerate() {
        let row = &mut dhf[r as usize * h..(r as usize + 1) * h];
        row.iter_mut()
            .zip(&dhp[k * h..(k + 1) * h])
            .for_each(|(d, g)| *d += g);
    }
    let mut dx = pool::take(n * h);
    rows::rms_norm_backward(&dhf, &x, &w_norm, &rstd, &mut dx, false);
    if grads.trains(&model.norm) {
        rows::rms_norm_weight_grad(&dhf, &x, &rstd, grads.of(&model.norm));
    }
    drop((dhf, x));

    for l in (0..model.layers.len()).rev() {
        let s = match saved.pop().expect("one saved state per layer") {
            Kept::All(s) => *s,
            Kept::Input(input, rng) => {
                model.mode.set_rng_state(rng);
                layer::forward(model, l, input, sh, (&cos, &sin))?.1
            }
        };
        dx = layer::backward(model, l, s, dx, sh, (&cos, &sin), &mut grads)?;
    }
    model.mode.set_rng_state(rng_after);
    if grads.trains(&model.embed_tokens) {
        let de = grads.of(&model.embed_tokens);
        for (row, &id) in dx.chunks(h).zip(&ids) {
            let to = &mut de[id as usize * h..(id as usize + 1) * h];
            to.iter_mut().zip(row).for_each(|(e, g)| *e += g);
        }
    }

    for (i, p) in params.iter().enumerate() {
        let t = p.var.as_tensor();
        if let Some(g) = grads.take(t) {
            let g = Tensor::from_vec(g, t.shape(), t.device())?;
            acc[i] = Some(match acc[i].take() {
                Some(a) => (a + g)?,
                None => g,
            });
        }
    }
    Ok(match preference {
        Some((loss, metrics, _)) => (loss, metrics),
        None => (
            sums.loss,
            Metrics::from([("token_accuracy".to_string(), sums.hits)]),
        ),
    })
}

/// The step's shape, the rope tables and the embedded input rows `[b·t, hidden]`, with the
/// input ids.
#[allow(clippy::type_complexity)]
fn prologue(
    model: &DecoderModel,
    batch: &Batch,
) -> Result<(Shape, (Vec<f32>, Vec<f32>), pool::Buf, Vec<u32>)> {
    let c = &model.config;
    let (b, t) = batch.input.dims2()?;
    let (n, h) = (b * t, c.hidden_size);
    let sh = Shape {
        n,
        hidden: h,
        inter: c.intermediate_size,
        attn: Dims {
            batch: b,
            seq: t,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: c
                .query_pre_attn_scalar
                .map_or(1.0 / (c.head_dim as f64).sqrt(), |s| 1.0 / s.sqrt())
                as f32,
        },
    };
    let rope = model.rope_tables(0, t)?;
    let (cos, sin) = (values(&rope.global.0)?, values(&rope.global.1)?);

    // embeddings
    let ids = batch.input.flatten_all()?.to_vec1::<u32>()?;
    let mut x = pool::take(n * h);
    with_f32(&model.embed_tokens, |d, l| {
        let e = view(d, l)?;
        for (row, &id) in x.chunks_mut(h).zip(&ids) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = e.data[id as usize * e.rs + j * e.cs];
            }
        }
        Ok(())
    })?;

    Ok((sh, (cos, sin), x, ids))
}

/// Forward only: each target's NLL (and whether it is the most likely token), for the
/// evaluation and a preference objective's reference pass. Nothing is kept for a backward
/// pass; the dropout stream is not touched outside training mode.
pub fn target_nll(model: &DecoderModel, batch: &Batch) -> Result<(Vec<f64>, f64)> {
    let (sh, (cos, sin), mut x, _) = prologue(model, batch)?;
    let (n, h) = (sh.n, sh.hidden);
    for l in 0..model.layers.len() {
        x = layer::forward(model, l, x, sh, (&cos, &sin))?.0;
    }
    let c = &model.config;
    let mut hf = pool::take(n * h);
    let mut rstd = pool::take(n);
    rows::rms_norm(
        &x,
        &values(&model.norm)?,
        c.rms_norm_eps as f32,
        &mut hf,
        &mut rstd,
    );
    let picked = batch.rows.to_vec1::<u32>()?;
    let targets = batch.targets.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let mut hp = Vec::with_capacity(picked.len() * h);
    for &r in &picked {
        hp.extend_from_slice(&hf[r as usize * h..(r as usize + 1) * h]);
    }
    let head = model.lm_head.as_ref().unwrap_or(&model.embed_tokens);
    with_f32(head, |d, l| {
        Ok(xent::target_nll(&hp, view(d, l)?, &targets))
    })
}

/// A batch's evaluation on the explicit path, forward only: the objective's loss sum and
/// metric sums, as [`Objective::loss_sum`] gives them.
pub fn evaluate(
    model: &DecoderModel,
    objective: &dyn Objective,
    batch: &Batch,
) -> Result<(f64, Metrics)> {
    let (nll, hits) = target_nll(model, batch)?;
    if objective.name() == "sft" {
        let metrics = Metrics::from([("token_accuracy".to_string(), hits)]);
        return Ok((nll.iter().sum(), metrics));
    }
    let (_, out) = loss_of_nll(objective, nll, batch)?;
    Ok((
        out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        out.metrics,
    ))
}

/// The targets' NLLs as an f32 variable (so the objective's function of them can be
/// differentiated), for [`Objective::loss_from_nll`] and the reference pass.
pub(crate) fn nll_var(nll: Vec<f64>) -> Result<candle_core::Var> {
    let n = nll.len();
    candle_core::Var::from_vec(
        nll.into_iter().map(|x| x as f32).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
}

/// `objective`'s loss of the targets' NLLs, with the variable they were given as.
fn loss_of_nll(
    objective: &dyn Objective,
    nll: Vec<f64>,
    batch: &Batch,
) -> Result<(candle_core::Var, super::objective::LossSum)> {
    let v = nll_var(nll)?;
    let out = objective
        .loss_from_nll(v.as_tensor(), batch)
        .ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "objective {} is not a function of the targets' NLL",
                objective.name()
            ))
        })??;
    Ok((v, out))
}

/// An objective's loss sum and metrics from the targets' NLLs (the picked hidden rows `hp`
/// through the output head), and each target's gradient scale: `∂loss / ∂nll / denom`.
fn loss_of_target_nll(
    objective: &dyn Objective,
    head: &Tensor,
    hp: &[f32],
    targets: &[u32],
    batch: &Batch,
    denom: f64,
) -> Result<(f64, Metrics, Vec<f32>)> {
    let (nll, _) = with_f32(head, |d, l| Ok(xent::target_nll(hp, view(d, l)?, targets)))?;
    let n = nll.len();
    let (v, out) = loss_of_nll(objective, nll, batch)?;
    let loss = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let grads = out.loss.backward()?;
    let scales = match grads.get(v.as_tensor()) {
        Some(g) => g
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .into_iter()
            .map(|g| (g / denom) as f32)
            .collect(),
        None => vec![0.0; n],
    };
    Ok((loss, out.metrics, scales))
}

#[cfg(test)]
mod tests;
