//! Full fine-tuning, Freeze (the last layers train) and BitFit (biases train, optionally
//! added where the model has none): existing tensors become trainable under their HF names.

use super::*;
use crate::setting::{boolean, key, positive, KeyKind::Bool, KeyKind::Integer};
use crate::targets::{has_bias, layer_params};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct FreezeConfig {
    /// How many of the last decoder layers train.
    pub trainable_layers: usize,
    /// Train the final norm as well.
    pub train_norm: bool,
    /// Train the output projection (ignored when it is tied to the embeddings).
    pub train_head: bool,
}

impl Default for FreezeConfig {
    fn default() -> Self {
        Self {
            trainable_layers: 2,
            train_norm: true,
            train_head: false,
        }
    }
}

impl Section for FreezeConfig {
    const KEYS: &'static [KeyInfo] = &[
        key(
            "freeze.trainable_layers",
            "Method",
            Integer,
            "Freeze: how many of the last decoder layers train.",
        ),
        key(
            "freeze.train_norm",
            "Method",
            Bool,
            "Freeze: train the final norm as well.",
        ),
        key(
            "freeze.train_head",
            "Method",
            Bool,
            "Freeze: train the output projection (ignored when tied to the embeddings).",
        ),
    ];

    fn set(&mut self, k: &str, v: &str) -> Option<Checked<()>> {
        Some(match k {
            "freeze.trainable_layers" => positive(k, v).map(|n| self.trainable_layers = n),
            "freeze.train_norm" => boolean(k, v).map(|b| self.train_norm = b),
            "freeze.train_head" => boolean(k, v).map(|b| self.train_head = b),
            _ => return None,
        })
    }

    fn get(&self, k: &str) -> Option<String> {
        Some(match k {
            "freeze.trainable_layers" => self.trainable_layers.to_string(),
            "freeze.train_norm" => self.train_norm.to_string(),
            "freeze.train_head" => self.train_head.to_string(),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS, Default)]
#[serde(default)]
#[ts(export)]
pub struct BitfitConfig {
    /// Add zero-initialised biases to every linear of a model that has none (Llama,
    /// Mistral), so BitFit has something to train.
    pub add_biases: bool,
}

impl Section for BitfitConfig {
    const KEYS: &'static [KeyInfo] = &[key(
        "bitfit.add_biases",
        "Method",
        Bool,
        "BitFit: add zero-initialised biases to a model that has none.",
    )];

    fn set(&mut self, k: &str, v: &str) -> Option<Checked<()>> {
        (k == "bitfit.add_biases").then(|| boolean(k, v).map(|b| self.add_biases = b))
    }

    fn get(&self, k: &str) -> Option<String> {
        (k == "bitfit.add_biases").then(|| self.add_biases.to_string())
    }
}

/// Full and Freeze merge trivially: their checkpoints are base tensors.
const BASE_TENSORS: Exports = Exports {
    peft: false,
    gguf_adapter: false,
    merge: Ok(()),
};

pub(super) struct Full;

impl Method for Full {
    fn facts(&self) -> Facts {
        Facts {
            description: Description {
                name: "Full fine-tuning",
                changes_architecture: phrase::NO,
                inference_latency: phrase::NONE,
                compute: phrase::VERY_HIGH,
                use_case: phrase::p("use.full", "plenty of hardware, maximum quality"),
                difficulty: phrase::MEDIUM,
            },
            sections: &[],
            default_lr: 2e-5,
            default_weight_decay: 0.01,
            checkpoint_file: TRAINABLE_FILE,
            exports: BASE_TENSORS,
            peft_type: None,
            quantizes_base: false,
        }
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        apply_full(model, None, a.weight_decay)
    }
    fn trainable_params(&self, _s: &MethodSections, c: &ModelConfig) -> u64 {
        crate::targets::base_params(c)
    }
    fn memory(&self, _s: &MethodSections, _c: &ModelConfig) -> MemoryShape {
        MemoryShape {
            trains_base: true,
            explicit_floats: Some(0),
            ..MemoryShape::default()
        }
    }
}

pub(super) struct Freeze;

impl Method for Freeze {
    fn facts(&self) -> Facts {
        Facts {
            description: Description {
                name: "Freeze (last layers)",
                changes_architecture: phrase::NO,
                inference_latency: phrase::NONE,
                compute: phrase::HIGH,
                use_case: phrase::p("use.freeze", "cheap partial update, small data"),
                difficulty: phrase::LOW,
            },
            sections: &["freeze"],
            // Full's defaults, checkpoint and exports: the last layers of a full fine-tune
            ..Full.facts()
        }
    }
    fn validate(&self, c: &Check) -> Checked<()> {
        if c.sections.freeze.trainable_layers > c.model.num_layers {
            return Err(format!(
                "`freeze.trainable_layers` is {} but the model has only {} layers",
                c.sections.freeze.trainable_layers, c.model.num_layers
            ));
        }
        Ok(())
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        apply_full(model, Some(&a.sections.freeze), a.weight_decay)
    }
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
        let f = &s.freeze;
        let n = f.trainable_layers.min(c.num_layers) as u64;
        let norm = if f.train_norm { c.hidden_size } else { 0 } as u64;
        let head = if f.train_head && !c.tie_word_embeddings {
            (c.vocab_size * c.hidden_size) as u64
        } else {
            0
        };
        n * layer_params(c) + norm + head
    }
    fn memory(&self, s: &MethodSections, c: &ModelConfig) -> MemoryShape {
        MemoryShape {
            trains_base: true,
            tracked_layers: Some(s.freeze.trainable_layers.min(c.num_layers).max(1)),
            explicit_floats: Some(0),
            ..MemoryShape::default()
        }
    }
}

pub(super) struct Bitfit;

impl Method for Bitfit {
    fn facts(&self) -> Facts {
        Facts {
            description: Description {
                name: "BitFit",
                changes_architecture: phrase::NO,
                inference_latency: phrase::NONE,
                compute: phrase::VERY_LOW,
                use_case: phrase::p("use.bitfit", "quick baseline"),
                difficulty: phrase::VERY_LOW,
            },
            sections: &["bitfit"],
            default_lr: 1e-3,
            default_weight_decay: 0.0,
            checkpoint_file: TRAINABLE_FILE,
            exports: {
                // biases fold into the base (added ones become new bias tensors)
                BASE_TENSORS
            },
            peft_type: None,
            quantizes_base: false,
        }
    }
    fn validate(&self, c: &Check) -> Checked<()> {
        if !(c.model.qkv_bias || c.model.o_bias || c.model.mlp_bias || c.sections.bitfit.add_biases)
        {
            return Err(format!(
                "method `bitfit` trains bias terms and this {} model has none; set `bitfit.add_biases=true` to add zero-initialised ones, or pick lora or ia3",
                c.model.family.as_str()
            ));
        }
        Ok(())
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        apply_bitfit(model, &a.sections.bitfit)
    }
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
        let per: usize = linear_dims(c)
            .iter()
            .filter(|(m, _, _)| has_bias(c, m) || s.bitfit.add_biases)
            .map(|&(_, _, o)| o)
            .sum();
        c.num_layers as u64 * per as u64
    }
    fn memory(&self, _s: &MethodSections, c: &ModelConfig) -> MemoryShape {
        MemoryShape {
            extra_floats: 7 * c.hidden_size.max(c.intermediate_size),
            explicit_floats: Some(0),
            ..MemoryShape::default()
        }
    }
}

/// Full / Freeze: every weight, or those of the last layers (and optionally the final norm
/// and head), trains; norms and biases without weight decay.
fn apply_full(
    model: &mut DecoderModel,
    freeze: Option<&FreezeConfig>,
    wd: f64,
) -> Result<Vec<Param>> {
    let mut params = vec![];
    let n_layers = model.layers.len();
    let first_trained = match freeze {
        None => 0,
        Some(f) => n_layers - f.trainable_layers.min(n_layers),
    };
    let full = freeze.is_none();
    let (train_norm, train_head) = freeze.map_or((true, true), |f| (f.train_norm, f.train_head));
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
fn apply_bitfit(model: &mut DecoderModel, cfg: &BitfitConfig) -> Result<Vec<Param>> {
    let mut params = vec![];
    if cfg.add_biases {
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
