//! Prefix tuning (an MLP reparameterisation) and P-Tuning v2 (prefixes learned directly):
//! per-layer key / value prefixes entering attention as a pre-filled cache; loading PEFT
//! PREFIX_TUNING folders.

use super::*;

/// The prefix embedding (and for prefix tuning its MLP).
pub(super) fn apply(model: &mut DecoderModel, cfg: &TrainConfig, wd: f64) -> Result<Vec<Param>> {
    let mut params = vec![];
    let c = model.config.clone();
    let kv = c.num_kv_heads * c.head_dim;
    let width = c.num_layers * 2 * kv;
    let n = cfg.prompt.n_virtual_tokens;
    let mut rng = InitRng(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 5);
    let mut var = |name: &str, t: Tensor, decay: bool| -> Result<Tensor> {
        let v = Var::from_tensor(&t)?;
        params.push(Param {
            name: name.into(),
            var: v.clone(),
            lr_scale: 1.0,
            weight_decay: if decay { wd } else { 0.0 },
        });
        Ok(v.as_tensor().clone())
    };
    // as PEFT's PrefixEncoder: an nn.Embedding (N(0, 1)) and nn.Linear layers
    let normal = |rows: usize, cols: usize, rng: &mut InitRng| -> Result<Tensor> {
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        Tensor::from_vec(v, (rows, cols), &model.device)?.to_dtype(model.dtype)
    };
    let prefix = if cfg.method == MethodKind::PTuningV2 {
        let e = normal(n, width, &mut rng)?;
        Prefix {
            embedding: var("prompt_embeddings", e, true)?,
            mlp: None,
        }
    } else {
        let hidden = match cfg.prefix.encoder_hidden {
            0 => kv,
            h => h,
        };
        let e = normal(n, kv, &mut rng)?;
        let embedding = var("prompt_encoder.default.embedding.weight", e, true)?;
        let mut layer = |i: usize, out: usize, inp: usize| -> Result<Linear> {
            let w = rng.linear(out, inp, model)?;
            let bound = 1.0 / (inp as f32).sqrt();
            let b: Vec<f32> = (0..out).map(|_| rng.uniform(-bound, bound)).collect();
            let b = Tensor::from_vec(b, out, &model.device)?.to_dtype(model.dtype)?;
            let p = format!("prompt_encoder.default.transform.{i}");
            Ok(Linear::new(
                var(&format!("{p}.weight"), w, true)?,
                Some(var(&format!("{p}.bias"), b, false)?),
            ))
        };
        let first = layer(0, hidden, kv)?;
        let second = layer(2, width, hidden)?;
        Prefix {
            embedding,
            mlp: Some((first, second)),
        }
    };
    model.prefix = Some(prefix);
    Ok(params)
}

/// A PEFT prefix-tuning folder: `prompt_embeddings` `[n_virtual, layers · 2 · kv]` (PEFT
/// saves the MLP's output, so both prefix tuning and P-Tuning v2 load the same way).
pub(super) fn load_prefix(
    model: &mut DecoderModel,
    dir: &std::path::Path,
    cfg_path: &std::path::Path,
    v: &serde_json::Value,
) -> std::result::Result<MethodKind, String> {
    let c = &model.config;
    let kv = c.num_kv_heads * c.head_dim;
    let field = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    let n = field("num_virtual_tokens").ok_or_else(|| {
        err(
            cfg_path,
            &"field `num_virtual_tokens`: missing or not a number",
        )
    })?;
    for (key, want) in [("num_layers", c.num_layers), ("token_dim", kv)] {
        if let Some(got) = field(key) {
            if got != want {
                return Err(err(
                    cfg_path,
                    &format!("field `{key}` is {got}, this model needs {want}"),
                ));
            }
        }
    }
    let (wf, mut tensors) = adapter_tensors(dir, &model.device)?;
    let e = tensors
        .remove("prompt_embeddings")
        .ok_or_else(|| err(&wf, &"no tensor `prompt_embeddings`"))?;
    let want = [n, c.num_layers * 2 * kv];
    if e.dims() != want {
        return Err(err(
            &wf,
            &format!(
                "`prompt_embeddings` has shape {:?}, this model needs {want:?}",
                e.dims()
            ),
        ));
    }
    model.prefix = Some(Prefix {
        embedding: e.to_dtype(model.dtype).map_err(|e| err(&wf, &e))?,
        mlp: None,
    });
    Ok(
        if v.get("prefix_projection").and_then(|x| x.as_bool()) == Some(true) {
            MethodKind::PrefixTuning
        } else {
            MethodKind::PTuningV2
        },
    )
}
