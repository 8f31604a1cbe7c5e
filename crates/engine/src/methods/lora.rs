//! LoRA and its variants on one code path: LoRA, QLoRA (the same adapter over an NF4 base),
//! LoRA+ (B's learning rate scaled), rsLoRA (the scale) and DoRA (a learned magnitude per
//! output row); and loading PEFT LoRA / DoRA folders.

use super::*;

/// Low-rank matrices on the target linears: A Kaiming-uniform, B zero, as PEFT initialises.
pub(super) fn apply(model: &mut DecoderModel, cfg: &TrainConfig, wd: f64) -> Result<Vec<Param>> {
    let mut params = vec![];
    let lc = &cfg.lora;
    // LoRA+: B learns `lr_ratio` times faster than A
    let b_scale = match cfg.method {
        MethodKind::LoraPlus => cfg.lora_plus.lr_ratio,
        _ => 1.0,
    };
    if cfg.method == MethodKind::Qlora {
        // normally done while loading (`load_model_with`), so the f32 base never
        // exists whole; a model built in full precision is quantized here
        quantize_linears(model)?;
    }
    let mut rng = InitRng(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (device, dtype) = (model.device.clone(), model.dtype);
    let selected = crate::config::resolve_targets("lora.targets", &lc.targets, &model.config)
        .map_err(candle_core::Error::Msg)?;
    for (l, layer) in model.layers.iter_mut().enumerate() {
        for (name, lin) in linears_mut(layer) {
            let short = name.rsplit('.').next().unwrap_or(name);
            if !selected.contains(&short) {
                continue;
            }
            let (out, inp) = lin.weight.dims2()?;
            // PEFT: A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0
            let bound = 1.0 / (inp as f32).sqrt();
            let a: Vec<f32> = (0..lc.r * inp)
                .map(|_| rng.uniform(-bound, bound))
                .collect();
            let a = Tensor::from_vec(a, (lc.r, inp), &device)?.to_dtype(dtype)?;
            let a = Var::from_tensor(&a)?;
            let b = Var::zeros((out, lc.r), dtype, &device)?;
            // DoRA: m starts at the row norms of W (B = 0, so W + sBA = W)
            let magnitude = match cfg.method {
                MethodKind::Dora => Some(Var::from_tensor(&crate::ops::row_norms(
                    &lin.weight.dense()?,
                )?)?),
                _ => None,
            };
            lin.lora = Some(LoraWeights {
                a: a.as_tensor().clone(),
                b: b.as_tensor().clone(),
                scale: lc.scale(),
                dropout: lc.dropout,
                magnitude: magnitude.as_ref().map(|m| m.as_tensor().clone()),
            });
            let module = format!("base_model.model.model.layers.{l}.{name}");
            if let Some(m) = magnitude {
                params.push(Param {
                    name: format!("{module}.lora_magnitude_vector"),
                    var: m,
                    lr_scale: 1.0,
                    weight_decay: wd,
                });
            }
            params.push(Param {
                name: format!("{module}.lora_A.weight"),
                var: a,
                lr_scale: 1.0,
                weight_decay: wd,
            });
            params.push(Param {
                name: format!("{module}.lora_B.weight"),
                var: b,
                lr_scale: b_scale,
                weight_decay: wd,
            });
        }
    }
    Ok(params)
}

/// A PEFT LoRA / DoRA folder, ours or made elsewhere: each module's rank comes from its
/// `lora_A` shape, its alpha from `alpha_pattern` (else `lora_alpha`); tensor names are
/// accepted with or without PEFT's `base_model.model.` prefix.
pub(super) fn load_lora(
    model: &mut DecoderModel,
    dir: &std::path::Path,
    cfg_path: &std::path::Path,
    v: &serde_json::Value,
) -> std::result::Result<MethodKind, String> {
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    // PEFT's default when the field is absent
    let alpha = match field("lora_alpha") {
        None => 8.0,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| err(cfg_path, &"field `lora_alpha`: not a number"))?,
    };
    let rslora = field("use_rslora")
        .and_then(|x| x.as_bool())
        .unwrap_or(false);
    let dora = field("use_dora").and_then(|x| x.as_bool()) == Some(true);
    let targets = peft_targets(field("target_modules"), cfg_path)?;
    let only_layers: Option<Vec<u64>> = field("layers_to_transform").map(|x| match x {
        serde_json::Value::Array(a) => a.iter().filter_map(|n| n.as_u64()).collect(),
        n => n.as_u64().into_iter().collect(),
    });
    // PEFT matches a pattern key against the end of the module's dotted name
    let pattern = |key: &str, module: &str| -> Option<f64> {
        let map = field(key)?.as_object()?;
        map.iter()
            .filter(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
            .max_by_key(|(k, _)| k.len())
            .and_then(|(_, x)| x.as_f64())
    };
    let (wf, raw) = adapter_tensors(dir, &model.device)?;
    let mut tensors: std::collections::HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, t)| {
            let k = k
                .strip_prefix("base_model.model.")
                .unwrap_or(&k)
                .to_string();
            (k.replace(".default.", "."), t)
        })
        .collect();
    let (dtype, mut loaded) = (model.dtype, 0usize);
    for (l, layer) in model.layers.iter_mut().enumerate() {
        if only_layers
            .as_ref()
            .is_some_and(|ls| !ls.contains(&(l as u64)))
        {
            continue;
        }
        for (name, lin) in linears_mut(layer) {
            let short = name.rsplit('.').next().unwrap_or(name);
            if !targets.iter().any(|t| t == short) {
                continue;
            }
            let module = format!("model.layers.{l}.{name}");
            let take = |tensors: &mut std::collections::HashMap<String, Tensor>, suffix: &str| {
                tensors
                    .remove(&format!("{module}.{suffix}"))
                    .ok_or_else(|| err(&wf, &format!("no tensor `{module}.{suffix}`")))
            };
            let a = take(&mut tensors, "lora_A.weight")?;
            let b = take(&mut tensors, "lora_B.weight")?;
            let (out, inp) = lin.weight.dims2().map_err(|e| err(&wf, &e))?;
            let r = a.dim(0).map_err(|e| err(&wf, &e))?;
            if a.dims() != [r, inp] || b.dims() != [out, r] {
                return Err(err(
                    &wf,
                    &format!(
                        "`{module}`: lora_A {:?} / lora_B {:?} do not fit a [{out}, {inp}] weight",
                        a.dims(),
                        b.dims()
                    ),
                ));
            }
            let expected_r =
                pattern("rank_pattern", &module).or_else(|| field("r").and_then(|x| x.as_f64()));
            if let Some(want) = expected_r.filter(|&w| w as usize != r) {
                return Err(err(
                    &wf,
                    &format!("`{module}` has rank {r}, adapter_config.json says {want}"),
                ));
            }
            let alpha = pattern("alpha_pattern", &module).unwrap_or(alpha);
            let scale = if rslora {
                alpha / (r as f64).sqrt()
            } else {
                alpha / r as f64
            };
            let magnitude = if dora {
                let m = tensors
                    .remove(&format!("{module}.lora_magnitude_vector"))
                    .or_else(|| tensors.remove(&format!("{module}.lora_magnitude_vector.weight")))
                    .ok_or_else(|| {
                        err(&wf, &format!("no tensor `{module}.lora_magnitude_vector`"))
                    })?;
                Some(
                    m.flatten_all()
                        .and_then(|m| m.to_dtype(dtype))
                        .map_err(|e| err(&wf, &e))?,
                )
            } else {
                None
            };
            let conv = |t: Tensor| t.to_dtype(dtype).map_err(|e| err(&wf, &e));
            lin.lora = Some(LoraWeights {
                a: conv(a)?,
                b: conv(b)?,
                scale,
                dropout: 0.0,
                magnitude,
            });
            loaded += 1;
        }
    }
    if let Some(extra) = tensors.keys().min() {
        return Err(err(
            &wf,
            &format!(
                "{} tensor(s) match no targeted module of this model, e.g. `{extra}`",
                tensors.len()
            ),
        ));
    }
    if loaded == 0 {
        return Err(err(&wf, &"no LoRA matrices for this model's modules"));
    }
    Ok(if dora {
        MethodKind::Dora
    } else {
        MethodKind::Lora
    })
}
