//! LoRA and its variants on one code path: LoRA, QLoRA (the same adapter over an NF4 base),
//! LoRA+ (B's learning rate scaled), rsLoRA (the scale) and DoRA (a learned magnitude per
//! output row); and loading PEFT LoRA / DoRA folders.

use super::*;
use crate::linear::ExplicitAdapter;
use crate::setting::{
    boolean, float_in, key, parse_targets, positive, KeyKind::Bool, KeyKind::Integer,
    KeyKind::Number, KeyKind::Text,
};
use crate::targets::LORA_TARGETS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    /// HF module names, e.g. `q_proj`, `v_proj`.
    pub targets: Vec<String>,
    /// `scale = alpha / sqrt(r)` instead of `alpha / r`.
    pub rslora: bool,
    /// Start from this PEFT adapter folder (same r and targets) instead of a fresh init.
    pub init: Option<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
            rslora: false,
            init: None,
        }
    }
}

impl LoraConfig {
    /// QLoRA's starting point: every linear, r 16, alpha 32.
    pub fn qlora() -> Self {
        Self {
            r: 16,
            alpha: 32.0,
            targets: LORA_TARGETS.map(String::from).to_vec(),
            ..Self::default()
        }
    }

    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

impl Section for LoraConfig {
    const KEYS: &'static [KeyInfo] = &[
        key("lora.r", "Method", Integer, "LoRA rank: width of the low-rank update."),
        key("lora.alpha", "Method", Number, "LoRA scale numerator: the update is multiplied by alpha / r."),
        key("lora.dropout", "Method", Number, "Dropout on the LoRA input during training."),
        key("lora.targets", "Method", Text, "Linear modules that get LoRA (comma list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; Phi-3's fused qkv_proj, gate_up_proj; or all-linear)."),
        key("lora.rslora", "Method", Bool, "Rank-stabilised scale alpha / sqrt(r) instead of alpha / r."),
        key("lora.init", "Method", Text, "Start from this PEFT adapter folder instead of a fresh init (none: fresh)."),
    ];

    fn set(&mut self, k: &str, v: &str) -> Option<Checked<()>> {
        Some(match k {
            "lora.r" => positive(k, v).map(|n| self.r = n),
            "lora.alpha" => float_in(k, v, 1e-6, 1e6).map(|x| self.alpha = x),
            "lora.dropout" => float_in(k, v, 0.0, 0.9).map(|x| self.dropout = x as f32),
            "lora.rslora" => boolean(k, v).map(|b| self.rslora = b),
            "lora.targets" => parse_targets(k, v).map(|t| self.targets = t),
            "lora.init" => init_dir(v).map(|d| self.init = d),
            _ => return None,
        })
    }

    fn get(&self, k: &str) -> Option<String> {
        Some(match k {
            "lora.r" => self.r.to_string(),
            "lora.alpha" => self.alpha.to_string(),
            "lora.dropout" => self.dropout.to_string(),
            "lora.targets" => self.targets.join(","),
            "lora.rslora" => self.rslora.to_string(),
            "lora.init" => crate::setting::show(&self.init),
            _ => return None,
        })
    }
}

/// `lora.init`: a PEFT adapter folder, or none.
fn init_dir(v: &str) -> std::result::Result<Option<String>, String> {
    crate::setting::optional(v, |v| {
        if !std::path::Path::new(v)
            .join("adapter_model.safetensors")
            .is_file()
        {
            return Err(format!(
                "`lora.init`: {v} is not a PEFT adapter folder (no adapter_model.safetensors)"
            ));
        }
        Ok(v.to_string())
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct LoraPlusConfig {
    /// B's learning rate over A's (LoRA+; Hayou et al. 2024 suggest 16).
    pub lr_ratio: f64,
}

impl Default for LoraPlusConfig {
    fn default() -> Self {
        Self { lr_ratio: 16.0 }
    }
}

impl Section for LoraPlusConfig {
    const KEYS: &'static [KeyInfo] = &[key(
        "lora_plus.lr_ratio",
        "Method",
        Number,
        "LoRA+: B's learning rate over A's.",
    )];

    fn set(&mut self, k: &str, v: &str) -> Option<Checked<()>> {
        (k == "lora_plus.lr_ratio").then(|| float_in(k, v, 1e-3, 1e4).map(|x| self.lr_ratio = x))
    }

    fn get(&self, k: &str) -> Option<String> {
        (k == "lora_plus.lr_ratio").then(|| self.lr_ratio.to_string())
    }
}

/// A low-rank update beside a frozen linear: `y = base(x) + scale · (dropout(x) Aᵀ) Bᵀ`,
/// or DoRA's rescaled form when it has a magnitude.
#[derive(Debug, Clone)]
pub(super) struct LoraWeights {
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f32,
    /// DoRA: the learned magnitude `m` `[out]` (`None` for plain LoRA).
    pub magnitude: Option<Tensor>,
}

impl LinearAdapter for LoraWeights {
    fn forward(&self, base: &Linear, x: &Tensor, mode: &TrainMode) -> Result<Tensor> {
        let y = base.base_forward(x, mode)?;
        let xd = if mode.training() && self.dropout > 0.0 {
            (x * mode.dropout_mask(x, self.dropout)?)?
        } else {
            x.clone()
        };
        let (a, b, m) = if mode.inference() {
            let m = self.magnitude.as_ref().map(Tensor::detach);
            (self.a.detach(), self.b.detach(), m)
        } else {
            (self.a.clone(), self.b.clone(), self.magnitude.clone())
        };
        let low = crate::ops::matmul_2d(&xd.contiguous()?, &a.t()?)?;
        let up = (crate::ops::matmul_2d(&low, &b.t()?)? * self.scale)?;
        let Some(m) = &m else {
            return y + up;
        };
        // DoRA, as PEFT computes it: y + (m/‖W + sBA‖ − 1)·(x̃Wᵀ) + m/‖…‖·s·x̃AᵀBᵀ, with the
        // row norm ‖·‖ detached (DoRA paper §4.3) and x̃ the dropped-out input (equal to x,
        // and x̃Wᵀ to y − b, without dropout).
        let wide = crate::dtype::wide_dtype(m.dtype());
        let ba = self.b.detach().matmul(&self.a.detach())?.to_dtype(wide)?;
        let w = (base.weight.dense()?.to_dtype(wide)? + (ba * self.scale)?)?;
        let norm = crate::ops::row_norms(&w)?.to_dtype(m.dtype())?.detach();
        let mns = m.broadcast_div(&norm)?;
        let plain = if mode.training() && self.dropout > 0.0 {
            base.weight.matmul_t(&xd, true)?
        } else {
            match &base.bias {
                Some(b) => y.broadcast_sub(b)?,
                None => y.clone(),
            }
        };
        let extra = (plain.broadcast_mul(&(mns.clone() - 1.0)?)? + up.broadcast_mul(&mns)?)?;
        y + extra
    }

    /// `W' = W + s·B·A`; DoRA: `W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖` per output row. In f32
    /// at least, so a bf16 base does not lose the small delta before it is added.
    fn fold(&self, w: Tensor, bias: Option<Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        use candle_core::DType;
        let dtype = w.dtype();
        let ba = self
            .b
            .detach()
            .to_dtype(DType::F32)?
            .matmul(&self.a.detach().to_dtype(DType::F32)?)?;
        let mut merged = (w.to_dtype(DType::F32)? + (ba * self.scale)?)?;
        if let Some(m) = &self.magnitude {
            let norm = merged.sqr()?.sum_keepdim(1)?.sqrt()?;
            let m = m.detach().to_dtype(DType::F32)?.unsqueeze(1)?;
            merged = merged.broadcast_mul(&m.broadcast_div(&norm)?)?;
        }
        Ok((merged.to_dtype(dtype)?, bias))
    }

    fn param_count(&self) -> usize {
        self.a.elem_count()
            + self.b.elem_count()
            + self.magnitude.as_ref().map_or(0, |m| m.elem_count())
    }

    fn explicit(&self) -> Option<&dyn ExplicitAdapter> {
        Some(self)
    }

    fn low_rank(&self) -> Option<(Tensor, Tensor, f64)> {
        // DoRA's magnitude rescales the whole weight: its change is not `scale·B·A`
        self.magnitude
            .is_none()
            .then(|| (self.a.detach(), self.b.detach(), self.scale))
    }
}

/// The LoRA family on one code path; what differs per member.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Variant {
    Plain,
    /// The base stored as NF4.
    Nf4,
    /// B's learning rate × `lora_plus.lr_ratio`.
    Plus,
    /// A learned magnitude per output row.
    Dora,
}

/// The LoRA family's shared answers to the registry.
pub(super) const SECTIONS: &[&str] = &["lora"];

pub(super) fn validate(s: &MethodSections, model: &ModelConfig) -> Checked<()> {
    crate::targets::resolve_targets("lora.targets", &s.lora.targets, model).map(|_| ())
}

/// `(module, in, out)` of each linear of a layer that `lora.targets` picks.
fn targeted(s: &MethodSections, c: &ModelConfig) -> Vec<(&'static str, usize, usize)> {
    let chosen = selected("lora.targets", &s.lora.targets, c);
    linear_dims(c)
        .into_iter()
        .filter(|(m, _, _)| chosen.contains(m))
        .collect()
}

pub(super) fn trainable(s: &MethodSections, c: &ModelConfig, dora: bool) -> u64 {
    let r = s.lora.r;
    let per: usize = targeted(s, c)
        .into_iter()
        .map(|(_, i, o)| r * (i + o) + if dora { o } else { 0 })
        .sum();
    c.num_layers as u64 * per as u64
}

/// Per token row and layer: the dropout mask and dropped input, the low-rank output, the
/// scaled output and the sum (and DoRA's norms and rescaled output).
pub(super) fn memory(s: &MethodSections, c: &ModelConfig, variant: Variant) -> MemoryShape {
    let lc = &s.lora;
    let targets = targeted(s, c);
    let low_rank_floats = targets
        .iter()
        .map(|&(_, inp, out)| {
            let dropped = if lc.dropout > 0.0 { 2 * inp } else { 0 };
            let dora = if variant == Variant::Dora { 4 * out } else { 0 };
            dropped + lc.r + 3 * out + dora
        })
        .sum();
    MemoryShape {
        nf4_base: variant == Variant::Nf4,
        low_rank_floats,
        explicit_floats: Some(lc.r * targets.len()),
        ..MemoryShape::default()
    }
}

/// PEFT's LoRA `adapter_config.json` (DoRA is LoRA with `use_dora`).
pub(super) fn peft_config(
    s: &MethodSections,
    base: &str,
    model: &ModelConfig,
    dora: bool,
) -> Value {
    let lc = &s.lora;
    let targets =
        crate::targets::resolve_targets("lora.targets", &lc.targets, model).unwrap_or_default();
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": lc.r,
        "lora_alpha": lc.alpha,
        "lora_dropout": lc.dropout,
        "target_modules": targets,
        "use_rslora": lc.rslora,
        "use_dora": dora,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
    })
}

/// Plain LoRA adapters: PEFT loads them, llama.cpp too, and they fold into the base.
pub(super) const EXPORTS: Exports = Exports {
    peft: true,
    gguf_adapter: true,
    merge: Ok(()),
};

pub(super) const LORA_LR: f64 = 2e-4;

/// Implements [`Method`] for a member of the LoRA family other than DoRA.
macro_rules! lora_member {
    ($ty:ident, $variant:expr, $describe:expr) => {
        pub(super) struct $ty;

        impl Method for $ty {
            fn facts(&self) -> Facts {
                Facts {
                    description: $describe,
                    sections: if $variant == Variant::Plus {
                        &["lora", "lora_plus"]
                    } else {
                        SECTIONS
                    },
                    default_lr: LORA_LR,
                    default_weight_decay: 0.0,
                    checkpoint_file: PEFT_FILE,
                    exports: EXPORTS,
                    // one member loads PEFT LoRA folders (DoRA ones included)
                    peft_type: ($variant == Variant::Plain).then_some("LORA"),
                    quantizes_base: $variant == Variant::Nf4,
                }
            }
            fn adjust_defaults(&self, s: &mut MethodSections) {
                if $variant == Variant::Nf4 && s.lora == LoraConfig::default() {
                    s.lora = LoraConfig::qlora();
                }
            }
            fn validate(&self, c: &Check) -> Checked<()> {
                validate(c.sections, c.model)
            }
            fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
                apply(model, a, $variant)
            }
            fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
                trainable(s, c, false)
            }
            fn memory(&self, s: &MethodSections, c: &ModelConfig) -> MemoryShape {
                memory(s, c, $variant)
            }
            fn init_dir<'a>(&self, s: &'a MethodSections) -> Option<&'a str> {
                s.lora.init.as_deref()
            }
            fn peft_config(
                &self,
                s: &MethodSections,
                base: &str,
                model: &ModelConfig,
            ) -> Option<Value> {
                Some(peft_config(s, base, model, false))
            }
            fn load_peft(&self, model: &mut DecoderModel, f: &PeftFolder) -> Checked<MethodKind> {
                load_lora(model, f)
            }
        }
    };
}

lora_member!(
    Lora,
    Variant::Plain,
    Description {
        name: "LoRA",
        changes_architecture: phrase::NO_MERGEABLE,
        inference_latency: phrase::NONE_AFTER_MERGE,
        compute: phrase::LOW,
        use_case: phrase::p("use.lora", "the general default"),
        difficulty: phrase::LOW,
    }
);

lora_member!(
    Qlora,
    Variant::Nf4,
    Description {
        name: "QLoRA",
        changes_architecture: phrase::NO_MERGEABLE,
        inference_latency: phrase::NONE_AFTER_MERGE,
        compute: phrase::QLORA_COMPUTE,
        use_case: phrase::p("use.qlora", "one consumer GPU, big model"),
        difficulty: phrase::MEDIUM,
    }
);

lora_member!(
    LoraPlus,
    Variant::Plus,
    Description {
        name: "LoRA+",
        changes_architecture: phrase::NO,
        inference_latency: phrase::NONE,
        compute: phrase::LOW,
        use_case: phrase::p("use.loraPlus", "faster LoRA convergence"),
        difficulty: phrase::LOW,
    }
);

/// Low-rank matrices on the target linears: A Kaiming-uniform, B zero, as PEFT initialises.
pub(super) fn apply(
    model: &mut DecoderModel,
    a: &MethodArgs,
    variant: Variant,
) -> Result<Vec<Param>> {
    let mut params = vec![];
    let wd = a.weight_decay;
    let lc = &a.sections.lora;
    // LoRA+: B learns `lr_ratio` times faster than A
    let b_scale = match variant {
        Variant::Plus => a.sections.lora_plus.lr_ratio,
        _ => 1.0,
    };
    if variant == Variant::Nf4 {
        // normally done while loading (`load_model_with`), so the f32 base never
        // exists whole; a model built in full precision is quantized here
        quantize_linears(model)?;
    }
    let mut rng = InitRng(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (device, dtype) = (model.device.clone(), model.dtype);
    let selected = crate::targets::resolve_targets("lora.targets", &lc.targets, &model.config)
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
            let magnitude = match variant {
                Variant::Dora => Some(Var::from_tensor(&crate::ops::row_norms(
                    &lin.weight.dense()?,
                )?)?),
                _ => None,
            };
            lin.adapter = Some(std::sync::Arc::new(LoraWeights {
                a: a.as_tensor().clone(),
                b: b.as_tensor().clone(),
                scale: lc.scale(),
                dropout: lc.dropout,
                magnitude: magnitude.as_ref().map(|m| m.as_tensor().clone()),
            }));
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
fn load_lora(model: &mut DecoderModel, f: &PeftFolder) -> Checked<MethodKind> {
    let (dir, cfg_path, v) = (f.dir, f.config_path, f.config);
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
            lin.adapter = Some(std::sync::Arc::new(LoraWeights {
                a: conv(a)?,
                b: conv(b)?,
                scale,
                dropout: 0.0,
                magnitude,
            }));
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
