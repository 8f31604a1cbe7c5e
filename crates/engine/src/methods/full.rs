//! Full fine-tuning, Freeze (the last layers train) and BitFit (biases train, optionally
//! added where the model has none): existing tensors become trainable under their HF names.

use super::*;

/// Full / Freeze: every weight, or those of the last layers (and optionally the final norm
/// and head), trains; norms and biases without weight decay.
pub(super) fn apply_full(
    model: &mut DecoderModel,
    cfg: &TrainConfig,
    wd: f64,
) -> Result<Vec<Param>> {
    let mut params = vec![];
    let n_layers = model.layers.len();
    let first_trained = match cfg.method {
        MethodKind::Full => 0,
        _ => n_layers - cfg.freeze.trainable_layers.min(n_layers),
    };
    let full = cfg.method == MethodKind::Full;
    let (train_norm, train_head) = (cfg.freeze.train_norm, cfg.freeze.train_head);
    visit_mut(model, |name, t| {
        let trains = full
            || match name.strip_prefix("model.layers.") {
                Some(rest) => {
                    let l: usize = rest.split('.').next().unwrap_or("0").parse().unwrap_or(0);
                    l >= first_trained
                }
                None => {
                    (name == "model.norm.weight" && train_norm)
                        || (name == "lm_head.weight" && train_head)
                }
            };
        if trains {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            // no decay on norms and biases, as transformers' Trainer does
            let decay = if t.rank() >= 2 { wd } else { 0.0 };
            params.push(Param {
                name: name.to_string(),
                var,
                lr_scale: 1.0,
                weight_decay: decay,
            });
        }
        Ok(())
    })?;
    Ok(params)
}

/// BitFit: the biases train (added as zeros where the model has none, with `add_biases`).
pub(super) fn apply_bitfit(model: &mut DecoderModel, cfg: &TrainConfig) -> Result<Vec<Param>> {
    let mut params = vec![];
    if cfg.bitfit.add_biases {
        let (device, dtype) = (model.device.clone(), model.dtype);
        for layer in &mut model.layers {
            for (_, lin) in linears_mut(layer) {
                if lin.bias.is_none() {
                    lin.bias = Some(Tensor::zeros(lin.weight.dims2()?.0, dtype, &device)?);
                }
            }
        }
    }
    visit_mut(model, |name, t| {
        if name.ends_with(".bias") {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            params.push(Param {
                name: name.to_string(),
                var,
                lr_scale: 1.0,
                weight_decay: 0.0,
            });
        }
        Ok(())
    })?;
    if params.is_empty() {
        candle_core::bail!("BitFit needs bias terms and this model has none");
    }
    Ok(params)
}
