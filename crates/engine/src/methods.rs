//! Fine-tuning methods: which tensors train, and the ones a method adds.
//!
//! Frozen weights stay plain tensors; only what a method trains becomes a `Var`, so the
//! optimizer never sees the rest. Names are the ones other tools use — HF parameter names
//! for Full/Freeze, PEFT's `base_model.model.<module>.lora_A.weight` for LoRA — because they
//! are the keys of checkpoints and exports.

use crate::config::{MethodKind, TrainConfig};
use crate::model::{BaseWeight, Bottleneck, DecoderModel, Ia3Scale, Linear, LoraWeights, Prefix};
use crate::optim::Param;
use candle_core::{Result, Tensor, Var};

/// Every named tensor of the model, mutable, in a fixed order.
pub fn visit_mut(
    model: &mut DecoderModel,
    mut f: impl FnMut(&str, &mut Tensor) -> Result<()>,
) -> Result<()> {
    f("model.embed_tokens.weight", &mut model.embed_tokens)?;
    for (l, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{l}");
        f(
            &format!("{p}.input_layernorm.weight"),
            &mut layer.input_layernorm,
        )?;
        for (name, lin) in linears_mut(layer) {
            // NF4 weights are frozen storage: nothing can train or replace them
            if let BaseWeight::Dense(w) = &mut lin.weight {
                f(&format!("{p}.{name}.weight"), w)?;
            }
            if let Some(b) = &mut lin.bias {
                f(&format!("{p}.{name}.bias"), b)?;
            }
        }
        let a = &mut layer.self_attn;
        for (name, norm) in [("q_norm", &mut a.q_norm), ("k_norm", &mut a.k_norm)] {
            if let Some(w) = norm {
                f(&format!("{p}.self_attn.{name}.weight"), w)?;
            }
        }
        f(
            &format!("{p}.post_attention_layernorm.weight"),
            &mut layer.post_attention_layernorm,
        )?;
        for (name, norm) in [
            (
                "pre_feedforward_layernorm",
                &mut layer.pre_feedforward_layernorm,
            ),
            (
                "post_feedforward_layernorm",
                &mut layer.post_feedforward_layernorm,
            ),
        ] {
            if let Some(w) = norm {
                f(&format!("{p}.{name}.weight"), w)?;
            }
        }
    }
    f("model.norm.weight", &mut model.norm)?;
    if let Some(h) = &mut model.lm_head {
        f("lm_head.weight", h)?;
    }
    Ok(())
}

/// The layer's linears with their HF module paths relative to the layer (Phi-3's fused
/// `qkv_proj` and `gate_up_proj` where the model has them).
pub fn linears_mut(layer: &mut crate::model::Layer) -> Vec<(&'static str, &mut Linear)> {
    let a = &mut layer.self_attn;
    let m = &mut layer.mlp;
    let mut out = vec![];
    match (&mut a.k_proj, &mut a.v_proj) {
        (Some(k), Some(v)) => {
            out.push(("self_attn.q_proj", &mut a.q_proj));
            out.push(("self_attn.k_proj", k));
            out.push(("self_attn.v_proj", v));
        }
        _ => out.push(("self_attn.qkv_proj", &mut a.q_proj)),
    }
    out.push(("self_attn.o_proj", &mut a.o_proj));
    match &mut m.up_proj {
        Some(up) => {
            out.push(("mlp.gate_proj", &mut m.gate_proj));
            out.push(("mlp.up_proj", up));
        }
        None => out.push(("mlp.gate_up_proj", &mut m.gate_proj)),
    }
    out.push(("mlp.down_proj", &mut m.down_proj));
    out
}

/// A seeded uniform stream for initialisation (xorshift64*).
struct InitRng(u64);

impl InitRng {
    /// N(0, 1) by Box–Muller.
    fn normal(&mut self) -> f32 {
        let u1 = self.uniform(0.0, 1.0).max(1e-12);
        let u2 = self.uniform(0.0, 1.0);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    /// A `[rows, cols]` tensor like a fresh `nn.Linear` weight: U(±1/√fan_in).
    fn linear(&mut self, rows: usize, cols: usize, model: &DecoderModel) -> Result<Tensor> {
        let bound = 1.0 / (cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| self.uniform(-bound, bound))
            .collect();
        Tensor::from_vec(v, (rows, cols), &model.device)?.to_dtype(model.dtype)
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// Make the chosen method's tensors trainable (adding LoRA matrices where needed) and return
/// them as optimizer parameters.
pub fn apply(model: &mut DecoderModel, cfg: &TrainConfig) -> Result<Vec<Param>> {
    let wd = cfg.weight_decay();
    let mut params = vec![];
    match cfg.method {
        MethodKind::Full | MethodKind::Freeze => {
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
                            let l: usize =
                                rest.split('.').next().unwrap_or("0").parse().unwrap_or(0);
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
        }
        MethodKind::Ia3 => {
            let (model_device, model_dtype) = (model.device.clone(), model.dtype);
            let selected =
                crate::config::resolve_targets("ia3.targets", &cfg.ia3.targets, &model.config)
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
        }
        MethodKind::PromptTuning => {
            // init from the embeddings of random vocabulary rows (seeded)
            let n = cfg.prompt.n_virtual_tokens;
            let vocab = model.embed_tokens.dim(0)? as u64;
            let mut s = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let rows: Vec<u32> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % vocab) as u32
                })
                .collect();
            let idx = Tensor::from_vec(rows, n, &model.device)?;
            let var = Var::from_tensor(&model.embed_tokens.detach().index_select(&idx, 0)?)?;
            model.prompt = Some(var.as_tensor().clone());
            params.push(Param {
                name: "prompt_embeddings".into(),
                var,
                lr_scale: 1.0,
                weight_decay: wd,
            });
        }
        MethodKind::Adapter => {
            // down: U(±1/√hidden) like a fresh nn.Linear; up: zeros, so each adapter starts
            // as the identity and the model as the base model
            let bn = cfg.adapter.width(model.config.hidden_size);
            let mut rng = InitRng(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 3);
            let (device, dtype) = (model.device.clone(), model.dtype);
            let h = model.config.hidden_size;
            for (l, layer) in model.layers.iter_mut().enumerate() {
                let mut make = |which: &str| -> Result<Bottleneck> {
                    let bound = 1.0 / (h as f32).sqrt();
                    let d: Vec<f32> = (0..bn * h).map(|_| rng.uniform(-bound, bound)).collect();
                    let vars = [
                        (
                            "down.weight",
                            Var::from_tensor(
                                &Tensor::from_vec(d, (bn, h), &device)?.to_dtype(dtype)?,
                            )?,
                        ),
                        ("down.bias", Var::zeros(bn, dtype, &device)?),
                        ("up.weight", Var::zeros((h, bn), dtype, &device)?),
                        ("up.bias", Var::zeros(h, dtype, &device)?),
                    ];
                    for (n, v) in &vars {
                        params.push(Param {
                            name: format!("model.layers.{l}.{which}.{n}"),
                            var: v.clone(),
                            lr_scale: 1.0,
                            weight_decay: if n.ends_with("weight") { wd } else { 0.0 },
                        });
                    }
                    let t = |i: usize| vars[i].1.as_tensor().clone();
                    Ok(Bottleneck {
                        down: Linear::new(t(0), Some(t(1))),
                        up: Linear::new(t(2), Some(t(3))),
                    })
                };
                let attn = make("adapter_attn")?;
                let ffn = make("adapter_ffn")?;
                layer.adapters = Some((attn, ffn));
            }
        }
        MethodKind::PrefixTuning | MethodKind::PTuningV2 => {
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
        }
        MethodKind::Bitfit => {
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
        }
        MethodKind::Lora | MethodKind::Qlora | MethodKind::LoraPlus | MethodKind::Dora => {
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
            let selected =
                crate::config::resolve_targets("lora.targets", &lc.targets, &model.config)
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
        }
    }
    Ok(params)
}

/// Store every decoder linear that is still full precision as NF4 (QLoRA's base).
pub fn quantize_linears(model: &mut DecoderModel) -> Result<()> {
    for layer in &mut model.layers {
        for (_, lin) in linears_mut(layer) {
            if let BaseWeight::Dense(w) = &lin.weight {
                let q = crate::quant::Nf4Tensor::quantize(w)?;
                lin.weight = BaseWeight::Nf4(std::sync::Arc::new(q));
            }
        }
    }
    Ok(())
}

/// How many parameters the model has in total (frozen and trainable, LoRA included).
pub fn count_params(model: &DecoderModel) -> usize {
    let mut n = model.embed_tokens.elem_count() + model.norm.elem_count();
    n += model.prompt.as_ref().map_or(0, |p| p.elem_count());
    if let Some(p) = &model.prefix {
        n += p.embedding.elem_count();
        if let Some((a, b)) = &p.mlp {
            for lin in [a, b] {
                n += lin.weight.elem_count() + lin.bias.as_ref().map_or(0, |b| b.elem_count());
            }
        }
    }
    if let Some(h) = &model.lm_head {
        n += h.elem_count();
    }
    for layer in &model.layers {
        n += layer.input_layernorm.elem_count() + layer.post_attention_layernorm.elem_count();
        for norm in [
            &layer.self_attn.q_norm,
            &layer.self_attn.k_norm,
            &layer.pre_feedforward_layernorm,
            &layer.post_feedforward_layernorm,
        ] {
            n += norm.as_ref().map_or(0, |w| w.elem_count());
        }
        let mut layer = layer.clone();
        for (_, lin) in linears_mut(&mut layer) {
            n += lin.weight.elem_count() + lin.bias.as_ref().map_or(0, |b| b.elem_count());
            if let Some(l) = &lin.lora {
                n += l.a.elem_count() + l.b.elem_count();
                n += l.magnitude.as_ref().map_or(0, |m| m.elem_count());
            }
            if let Some(s) = &lin.ia3 {
                n += s.scale.elem_count();
            }
        }
        if let Some((a, f)) = &layer.adapters {
            for b in [a, f] {
                for lin in [&b.down, &b.up] {
                    n += lin.weight.elem_count() + lin.bias.as_ref().map_or(0, |b| b.elem_count());
                }
            }
        }
    }
    n
}

/// Overwrite trainable parameters from named tensors (a checkpoint or an existing adapter).
pub fn load_params(
    params: &[Param],
    tensors: &std::collections::HashMap<String, Tensor>,
) -> Result<()> {
    for p in params {
        let t = tensors.get(&p.name).ok_or_else(|| {
            candle_core::Error::Msg(format!("the checkpoint has no tensor `{}`", p.name))
        })?;
        if t.dims() != p.var.dims() {
            candle_core::bail!(
                "`{}` has shape {:?}, the model needs {:?}",
                p.name,
                t.dims(),
                p.var.dims()
            );
        }
        p.var
            .set(&t.to_device(p.var.device())?.to_dtype(p.var.dtype())?)?;
    }
    Ok(())
}

/// `path: message`, the form every adapter-loading error takes.
fn err(path: &std::path::Path, e: &dyn std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// The tensors of a PEFT folder's `adapter_model.safetensors`, with the file's path for errors.
fn adapter_tensors(
    dir: &std::path::Path,
    device: &candle_core::Device,
) -> std::result::Result<
    (
        std::path::PathBuf,
        std::collections::HashMap<String, Tensor>,
    ),
    String,
> {
    let wf = dir.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&wf, device).map_err(|e| err(&wf, &e))?;
    Ok((wf, tensors))
}

/// Apply a trained adapter or checkpoint folder to `model` for inference: a PEFT LoRA dir
/// (`adapter_config.json` + `adapter_model.safetensors`, ours or made by PEFT) or a
/// Full/Freeze checkpoint (`trainable.safetensors` with HF tensor names).
pub fn load_adapter_dir(
    model: &mut DecoderModel,
    dir: &std::path::Path,
) -> std::result::Result<MethodKind, String> {
    let cfg_path = dir.join("adapter_config.json");
    if cfg_path.exists() {
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| err(&cfg_path, &e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(&cfg_path, &e))?;
        let field = |k: &str| v.get(k).filter(|x| !x.is_null());
        match field("peft_type").and_then(|t| t.as_str()) {
            Some("LORA") => {}
            Some("IA3") => return load_ia3(model, dir, &cfg_path, &v),
            Some("PROMPT_TUNING") => {
                let n = field("num_virtual_tokens")
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| err(&cfg_path, &"field `num_virtual_tokens`: missing or not a number"))?
                    as usize;
                let mut c = TrainConfig::for_method(MethodKind::PromptTuning);
                c.prompt.n_virtual_tokens = n;
                let params = apply(model, &c).map_err(|e| err(dir, &e))?;
                let (wf, tensors) = adapter_tensors(dir, &model.device)?;
                load_params(&params, &tensors).map_err(|e| err(&wf, &e))?;
                return Ok(MethodKind::PromptTuning);
            }
            Some("PREFIX_TUNING") => return load_prefix(model, dir, &cfg_path, &v),
            other => {
                return Err(err(
                    &cfg_path,
                    &format!(
                        "field `peft_type`: {other:?} is not supported here (LORA, IA3, PROMPT_TUNING and PREFIX_TUNING are)"
                    ),
                ))
            }
        }
        return load_lora(model, dir, &cfg_path, &v);
    }
    let wf = dir.join("trainable.safetensors");
    if !wf.exists() {
        return Err(format!(
            "{}: not an adapter folder (no adapter_config.json or trainable.safetensors)",
            dir.display()
        ));
    }
    let mut tensors =
        candle_core::safetensors::load(&wf, &model.device).map_err(|e| err(&wf, &e))?;
    if let Some(down) = tensors.get("model.layers.0.adapter_attn.down.weight") {
        // Houlsby adapters: rebuild them at the saved width, then load
        let mut c = TrainConfig::for_method(MethodKind::Adapter);
        c.adapter.bottleneck = Some(down.dim(0).map_err(|e| err(&wf, &e))?);
        let params = apply(model, &c).map_err(|e| err(dir, &e))?;
        load_params(&params, &tensors).map_err(|e| err(&wf, &e))?;
        for p in &params {
            tensors.remove(&p.name);
        }
        if tensors.is_empty() {
            return Ok(MethodKind::Adapter);
        }
    }
    let mut used = 0;
    let dtype = model.dtype;
    // BitFit with `add_biases`: the biases it trained exist only in the checkpoint
    let device = model.device.clone();
    for (l, layer) in model.layers.iter_mut().enumerate() {
        for (name, lin) in linears_mut(layer) {
            if lin.bias.is_none() && tensors.contains_key(&format!("model.layers.{l}.{name}.bias"))
            {
                let out = lin.weight.dims2().map_err(|e| err(&wf, &e))?.0;
                lin.bias = Some(Tensor::zeros(out, dtype, &device).map_err(|e| err(&wf, &e))?);
            }
        }
    }
    visit_mut(model, |name, t| {
        if let Some(new) = tensors.get(name) {
            if new.dims() != t.dims() {
                candle_core::bail!(
                    "`{name}` has shape {:?}, the model needs {:?}",
                    new.dims(),
                    t.dims()
                );
            }
            *t = new.to_dtype(dtype)?;
            used += 1;
        }
        Ok(())
    })
    .map_err(|e| err(&wf, &e))?;
    if used != tensors.len() {
        return Err(err(
            &wf,
            &format!(
                "{} of its tensors are not in this model",
                tensors.len() - used
            ),
        ));
    }
    Ok(MethodKind::Full)
}

/// A PEFT LoRA / DoRA folder, ours or made elsewhere: each module's rank comes from its
/// `lora_A` shape, its alpha from `alpha_pattern` (else `lora_alpha`); tensor names are
/// accepted with or without PEFT's `base_model.model.` prefix.
fn load_lora(
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

/// A PEFT prefix-tuning folder: `prompt_embeddings` `[n_virtual, layers · 2 · kv]` (PEFT
/// saves the MLP's output, so both prefix tuning and P-Tuning v2 load the same way).
fn load_prefix(
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

/// A PEFT (IA)3 adapter folder: `ia3_l` vectors stored as `(out, 1)` or `(1, in)`.
fn load_ia3(
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
    let params = apply(model, &c).map_err(|e| err(dir, &e))?;
    let (wf, tensors) = adapter_tensors(dir, &model.device)?;
    let flat = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.flatten_all()?)))
        .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()
        .map_err(|e| err(&wf, &e))?;
    load_params(&params, &flat).map_err(|e| err(&wf, &e))?;
    Ok(MethodKind::Ia3)
}

/// PEFT's `target_modules`: a list of (possibly dotted) module names, or `all-linear`.
fn peft_targets(
    v: Option<&serde_json::Value>,
    path: &std::path::Path,
) -> std::result::Result<Vec<String>, String> {
    let targets: Vec<String> = match v {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| {
                x.as_str()
                    .map(|s| s.rsplit('.').next().unwrap_or(s).to_string())
            })
            .collect(),
        Some(serde_json::Value::String(s)) if s == "all-linear" => {
            crate::config::LORA_TARGETS.map(String::from).to_vec()
        }
        _ => {
            return Err(format!(
                "{}: field `target_modules`: missing or not a list",
                path.display()
            ))
        }
    };
    if let Some(bad) = targets
        .iter()
        .find(|t| !crate::config::LORA_TARGETS.contains(&t.as_str()))
    {
        return Err(format!(
            "{}: field `target_modules`: `{bad}` is not a linear module of this model",
            path.display()
        ));
    }
    Ok(targets)
}
