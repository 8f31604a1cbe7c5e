//! (IA)3: learned vectors that rescale attention outputs (k, v) and the FFN's input;
//! loading PEFT IA3 folders.

use super::*;
use crate::setting::{key, parse_targets, KeyKind::Text};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct Ia3Config {
    /// HF module names; attention modules scale their output, MLP modules their input.
    pub targets: Vec<String>,
}

impl Default for Ia3Config {
    fn default() -> Self {
        Self {
            targets: ["k_proj", "v_proj", "down_proj"].map(String::from).to_vec(),
        }
    }
}

impl Section for Ia3Config {
    const KEYS: &'static [KeyInfo] = &[key(
        "ia3.targets",
        "Method",
        Text,
        "(IA)3: modules whose activations are rescaled (attention outputs, MLP inputs).",
    )];

    fn set(&mut self, k: &str, v: &str) -> Option<Checked<()>> {
        (k == "ia3.targets").then(|| parse_targets(k, v).map(|t| self.targets = t))
    }

    fn get(&self, k: &str) -> Option<String> {
        (k == "ia3.targets").then(|| self.targets.join(","))
    }
}

/// (IA)3 scaling of a linear: the output features (`feedforward == false`, k and v) or the
/// input features (`feedforward == true`, the FFN's down projection), as PEFT does.
#[derive(Debug, Clone)]
struct Ia3Scale {
    /// `[out]` or `[in]`
    scale: Tensor,
    feedforward: bool,
}

impl LinearAdapter for Ia3Scale {
    fn forward(&self, base: &Linear, x: &Tensor, mode: &TrainMode) -> Result<Tensor> {
        if self.feedforward {
            base.base_forward(&x.broadcast_mul(&self.scale)?, mode)
        } else {
            base.base_forward(x, mode)?.broadcast_mul(&self.scale)
        }
    }

    /// Attention outputs: `y = l ⊙ (W·x + b)`, so `W' = diag(l)·W`, `b' = l ⊙ b`;
    /// feed-forward inputs: `y = W·(l ⊙ x) + b`, so `W' = W·diag(l)`.
    fn fold(&self, w: Tensor, bias: Option<Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let l = self.scale.detach().to_dtype(w.dtype())?;
        if self.feedforward {
            Ok((w.broadcast_mul(&l.unsqueeze(0)?)?, bias))
        } else {
            let bias = bias.map(|b| b.mul(&l.to_dtype(b.dtype())?)).transpose()?;
            Ok((w.broadcast_mul(&l.unsqueeze(1)?)?, bias))
        }
    }

    fn param_count(&self) -> usize {
        self.scale.elem_count()
    }
}

/// The selected modules with their scaled widths (out for attention, in for the MLP).
fn scaled(s: &MethodSections, c: &ModelConfig) -> usize {
    linear_dims(c)
        .into_iter()
        .filter(|(m, _, _)| selected("ia3.targets", &s.ia3.targets, c).contains(m))
        .map(|(m, i, o)| if is_mlp(m) { i } else { o })
        .sum()
}

pub(super) struct Ia3;

impl Method for Ia3 {
    fn facts(&self) -> Facts {
        Facts {
            description: Description {
                name: "(IA)3",
                changes_architecture: phrase::NO_MERGEABLE,
                inference_latency: phrase::NONE_AFTER_MERGE,
                compute: phrase::VERY_LOW,
                use_case: phrase::p("use.ia3", "fewest parameters"),
                difficulty: phrase::LOW,
            },
            sections: &["ia3"],
            default_lr: 3e-3,
            default_weight_decay: 0.0,
            checkpoint_file: PEFT_FILE,
            exports: {
                // llama.cpp has no (IA)3 adapters; merged, the scales fold into the weights
                Exports {
                    peft: true,
                    gguf_adapter: false,
                    merge: Ok(()),
                }
            },
            peft_type: Some("IA3"),
            quantizes_base: false,
        }
    }
    fn validate(&self, c: &Check) -> Checked<()> {
        crate::targets::resolve_targets("ia3.targets", &c.sections.ia3.targets, c.model).map(|_| ())
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        apply(model, &a.sections.ia3, a.weight_decay)
    }
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
        c.num_layers as u64 * scaled(s, c) as u64
    }
    fn memory(&self, s: &MethodSections, c: &ModelConfig) -> MemoryShape {
        MemoryShape {
            extra_floats: scaled(s, c),
            ..MemoryShape::default()
        }
    }
    fn peft_config(&self, s: &MethodSections, base: &str, model: &ModelConfig) -> Option<Value> {
        let targets = crate::targets::resolve_targets("ia3.targets", &s.ia3.targets, model)
            .unwrap_or_default();
        let ff: Vec<&str> = targets.iter().copied().filter(|t| is_mlp(t)).collect();
        Some(serde_json::json!({
            "peft_type": "IA3",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "target_modules": targets,
            "feedforward_modules": ff,
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_ia3_weights": true,
            "modules_to_save": null,
        }))
    }
    fn load_peft(&self, model: &mut DecoderModel, f: &PeftFolder) -> Checked<MethodKind> {
        load_ia3(model, f)
    }
}

/// One scale vector per target linear, initialised to ones.
fn apply(model: &mut DecoderModel, cfg: &Ia3Config, wd: f64) -> Result<Vec<Param>> {
    let mut params = vec![];
    let (model_device, model_dtype) = (model.device.clone(), model.dtype);
    let selected = crate::targets::resolve_targets("ia3.targets", &cfg.targets, &model.config)
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
            lin.adapter = Some(std::sync::Arc::new(Ia3Scale {
                scale: var.as_tensor().clone(),
                feedforward,
            }));
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
fn load_ia3(model: &mut DecoderModel, f: &PeftFolder) -> Checked<MethodKind> {
    let (dir, cfg_path, v) = (f.dir, f.config_path, f.config);
    let mut c = defaults_for(MethodKind::Ia3);
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
    let params = apply_default(model, MethodKind::Ia3, &c).map_err(|e| err(dir, &e))?;
    let (wf, tensors) = adapter_tensors(dir, &model.device)?;
    let flat = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.flatten_all()?)))
        .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()
        .map_err(|e| err(&wf, &e))?;
    load_params(&params, &flat).map_err(|e| err(&wf, &e))?;
    Ok(MethodKind::Ia3)
}
