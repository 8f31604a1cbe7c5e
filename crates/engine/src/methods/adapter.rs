//! Houlsby adapters: a bottleneck MLP after attention and after the FFN of every layer,
//! initialised near the identity.

use super::*;
use crate::setting::{key, optional, positive, show, KeyKind::Integer};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct AdapterConfig {
    /// Width of the bottleneck (16–256 is the useful range); none: 64, or half the hidden
    /// size where that is smaller (a bottleneck must be narrower than the model).
    pub bottleneck: Option<usize>,
}

impl AdapterConfig {
    /// The bottleneck width for a model of this hidden size.
    pub fn width(&self, hidden_size: usize) -> usize {
        self.bottleneck
            .unwrap_or_else(|| 64.min(hidden_size / 2).max(1))
    }
}

impl Section for AdapterConfig {
    const KEYS: &'static [KeyInfo] = &[key(
        "adapter.bottleneck",
        "Method",
        Integer,
        "Houlsby adapters: width of the bottleneck (none: 64, or half the hidden size where that is smaller).",
    )];

    fn set(&mut self, k: &str, v: &str) -> Option<Checked<()>> {
        (k == "adapter.bottleneck")
            .then(|| optional(v, |v| positive(k, v)).map(|b| self.bottleneck = b))
    }

    fn get(&self, k: &str) -> Option<String> {
        (k == "adapter.bottleneck").then(|| show(&self.bottleneck))
    }
}

pub(super) struct Adapter;

impl Method for Adapter {
    fn facts(&self) -> Facts {
        Facts {
            description: Description {
                name: "Adapter (Houlsby)",
                changes_architecture: phrase::YES_SERIAL,
                inference_latency: phrase::SMALL_ADDED,
                compute: phrase::LOW,
                use_case: phrase::p("use.adapter", "modular multi-task"),
                difficulty: phrase::MEDIUM,
            },
            sections: &["adapter"],
            default_lr: 1e-3,
            default_weight_decay: 0.0,
            checkpoint_file: TRAINABLE_FILE,
            exports: Exports {
                peft: false,
                gguf_adapter: false,
                merge: Err("Houlsby adapters add layers the base architecture does not have"),
            },
            peft_type: None,
            quantizes_base: false,
        }
    }
    fn validate(&self, c: &Check) -> Checked<()> {
        let width = c.sections.adapter.width(c.model.hidden_size);
        if width >= c.model.hidden_size {
            return Err(format!(
                "`adapter.bottleneck` is {width} but must be below the hidden size ({})",
                c.model.hidden_size
            ));
        }
        Ok(())
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        apply(model, a)
    }
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
        let (bn, h) = (s.adapter.width(c.hidden_size) as u64, c.hidden_size as u64);
        c.num_layers as u64 * 2 * (2 * bn * h + bn + h)
    }
    fn memory(&self, s: &MethodSections, c: &ModelConfig) -> MemoryShape {
        let h = c.hidden_size;
        MemoryShape {
            extra_floats: 2 * (2 * s.adapter.width(h) + 2 * h),
            ..MemoryShape::default()
        }
    }
}

/// Two bottleneck adapters per layer at `adapter.width(hidden)`.
fn apply(model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
    let mut params = vec![];
    let wd = a.weight_decay;
    // down: U(±1/√hidden) like a fresh nn.Linear; up: zeros, so each adapter starts
    // as the identity and the model as the base model
    let bn = a.sections.adapter.width(model.config.hidden_size);
    let mut rng = InitRng(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 3);
    let (device, dtype) = (model.device.clone(), model.dtype);
    let h = model.config.hidden_size;
    for (l, layer) in model.layers.iter_mut().enumerate() {
        let mut make = |which: &str| -> Result<Bottleneck> {
            let bound = 1.0 / (h as f32).sqrt();
            let d: Vec<f32> = (0..bn * h).map(|_| rng.uniform(-bound, bound)).collect();
            let vars = [
                (
                    "down.weight",
                    Var::from_tensor(&Tensor::from_vec(d, (bn, h), &device)?.to_dtype(dtype)?)?,
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
    Ok(params)
}
