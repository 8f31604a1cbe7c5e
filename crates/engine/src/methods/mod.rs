//! Fine-tuning methods: which tensors train, and the ones a method adds.
//!
//! Frozen weights stay plain tensors; only what a method trains becomes a `Var`, so the
//! optimizer never sees the rest. Names are the ones other tools use — HF parameter names
//! for Full/Freeze, PEFT's `base_model.model.<module>.lora_A.weight` for LoRA — because they
//! are the keys of checkpoints and exports.

use crate::config::{MethodKind, TrainConfig};
use crate::linear::{BaseWeight, Ia3Scale, Linear, LoraWeights};
use crate::model::{Bottleneck, DecoderModel, Prefix};
use crate::params::{load_params, Param};
use candle_core::{Result, Tensor, Var};

mod adapter;
mod full;
mod ia3;
mod lora;
mod prefix;
mod prompt;

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
pub(super) struct InitRng(pub(super) u64);

impl InitRng {
    /// N(0, 1) by Box–Muller.
    pub(super) fn normal(&mut self) -> f32 {
        let u1 = self.uniform(0.0, 1.0).max(1e-12);
        let u2 = self.uniform(0.0, 1.0);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    /// A `[rows, cols]` tensor like a fresh `nn.Linear` weight: U(±1/√fan_in).
    pub(super) fn linear(
        &mut self,
        rows: usize,
        cols: usize,
        model: &DecoderModel,
    ) -> Result<Tensor> {
        let bound = 1.0 / (cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| self.uniform(-bound, bound))
            .collect();
        Tensor::from_vec(v, (rows, cols), &model.device)?.to_dtype(model.dtype)
    }

    pub(super) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
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
    match cfg.method {
        MethodKind::Full | MethodKind::Freeze => full::apply_full(model, cfg, wd),
        MethodKind::Bitfit => full::apply_bitfit(model, cfg),
        MethodKind::Lora | MethodKind::Qlora | MethodKind::LoraPlus | MethodKind::Dora => {
            lora::apply(model, cfg, wd)
        }
        MethodKind::Ia3 => ia3::apply(model, cfg, wd),
        MethodKind::PromptTuning => prompt::apply(model, cfg, wd),
        MethodKind::PrefixTuning | MethodKind::PTuningV2 => prefix::apply(model, cfg, wd),
        MethodKind::Adapter => adapter::apply(model, cfg, wd),
    }
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

/// `path: message`, the form every adapter-loading error takes.
pub(super) fn err(path: &std::path::Path, e: &dyn std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// The tensors of a PEFT folder's `adapter_model.safetensors`, with the file's path for errors.
pub(super) fn adapter_tensors(
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
            Some("IA3") => return ia3::load_ia3(model, dir, &cfg_path, &v),
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
            Some("PREFIX_TUNING") => return prefix::load_prefix(model, dir, &cfg_path, &v),
            other => {
                return Err(err(
                    &cfg_path,
                    &format!(
                        "field `peft_type`: {other:?} is not supported here (LORA, IA3, PROMPT_TUNING and PREFIX_TUNING are)"
                    ),
                ))
            }
        }
        return lora::load_lora(model, dir, &cfg_path, &v);
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

/// PEFT's `target_modules`: a list of (possibly dotted) module names, or `all-linear`.
pub(super) fn peft_targets(
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
