//! (IA)3: learned vectors that rescale attention outputs (k, v) and the FFN's input;
//! loading PEFT IA3 folders.

use super::*;

/// One scale vector per target linear, initialised to ones.
pub(super) fn apply(model: &mut DecoderModel, cfg: &TrainConfig, wd: f64) -> Result<Vec<Param>> {
    let mut params = vec![];
    let (model_device, model_dtype) = (model.device.clone(), model.dtype);
    let selected = crate::config::resolve_targets("ia3.targets", &cfg.ia3.targets, &model.config)
        .map_err(candle_core::Error::Msg)?;
    for (l, layer) in model.layers.iter_mut().enumerate() {
        for (name, lin) in linears_mut(layer) {
            let short = name.rsplit('.').next().unwrap_or(name);
            if !selected.contains(&short) {
                continue;
            }
            let feedforward = name.starts_with("mlp.");
            let (out, inp) = lin.weight.dims2()?;
            let n = if feedforward { inp } else { out };
            let var = Var::ones(n, model_dtype, &model_device)?;
            lin.ia3 = Some(Ia3Scale {
                scale: var.as_tensor().clone(),
                feedforward,
            });
            params.push(Param {
                name: format!("base_model.model.model.layers.{l}.{name}.ia3_l"),
                var,
                lr_scale: 1.0,
                weight_decay: wd,
            });
        }
    }
    Ok(params)
}

/// A PEFT (IA)3 adapter folder: `ia3_l` vectors stored as `(out, 1)` or `(1, in)`.
pub(super) fn load_ia3(
    model: &mut DecoderModel,
    dir: &std::path::Path,
    cfg_path: &std::path::Path,
    v: &serde_json::Value,
) -> std::result::Result<MethodKind, String> {
    let mut c = TrainConfig::for_method(MethodKind::Ia3);
    c.ia3.targets = peft_targets(v.get("target_modules"), cfg_path)?;
    let ff = match v.get("feedforward_modules").filter(|x| !x.is_null()) {
        Some(f) => peft_targets(Some(f), cfg_path)?,
        None => vec![],
    };
    if let Some(bad) = c.ia3.targets.iter().find(|t| {
        let is_mlp = matches!(t.as_str(), "gate_proj" | "up_proj" | "down_proj");
        is_mlp != ff.contains(t)
    }) {
        return Err(err(
            cfg_path,
            &format!("field `feedforward_modules`: `{bad}` must be listed exactly when it is an MLP module"),
        ));
    }
    let params = super::apply(model, &c).map_err(|e| err(dir, &e))?;
    let (wf, tensors) = adapter_tensors(dir, &model.device)?;
    let flat = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.flatten_all()?)))
        .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()
        .map_err(|e| err(&wf, &e))?;
    load_params(&params, &flat).map_err(|e| err(&wf, &e))?;
    Ok(MethodKind::Ia3)
}
