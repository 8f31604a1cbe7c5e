//! Prefix tuning (an MLP reparameterisation) and P-Tuning v2 (prefixes learned directly):
//! per-layer key / value prefixes entering attention as a pre-filled cache; loading PEFT
//! PREFIX_TUNING folders.

use super::prompt::validate_virtual;
use super::*;
use crate::setting::{key, num, KeyKind::Integer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS, Default)]
#[serde(default)]
#[ts(export)]
pub struct PrefixConfig {
    /// Hidden width of the reparameterisation MLP (prefix tuning); 0 = the key/value width,
    /// as PEFT defaults.
    pub encoder_hidden: usize,
}

impl Section for PrefixConfig {
    const KEYS: &'static [KeyInfo] = &[key(
        "prefix.encoder_hidden",
        "Method",
        Integer,
        "Prefix tuning: hidden width of the reparameterisation MLP (0 = the key/value width).",
    )];

    fn set(&mut self, k: &str, v: &str) -> Option<Checked<()>> {
        (k == "prefix.encoder_hidden")
            .then(|| num(k, v, "a whole number").map(|n| self.encoder_hidden = n))
    }

    fn get(&self, k: &str) -> Option<String> {
        (k == "prefix.encoder_hidden").then(|| self.encoder_hidden.to_string())
    }
}

/// The key/value width of one layer.
fn kv_width(c: &ModelConfig) -> usize {
    c.num_kv_heads * c.head_dim
}

/// PEFT's PREFIX_TUNING config (GQA: `token_dim` and `num_attention_heads` describe the
/// key/value heads). The saved prefixes are the MLP's output, so `inference_mode` loads them
/// as they are.
fn peft_config(s: &MethodSections, base: &str, model: &ModelConfig, projection: bool) -> Value {
    let kv = kv_width(model);
    serde_json::json!({
        "peft_type": "PREFIX_TUNING",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "num_virtual_tokens": s.prompt.n_virtual_tokens,
        "token_dim": kv,
        "num_transformer_submodules": 1,
        "num_attention_heads": model.num_kv_heads,
        "num_layers": model.num_layers,
        "encoder_hidden_size": if s.prefix.encoder_hidden == 0 { kv } else { s.prefix.encoder_hidden },
        "prefix_projection": projection,
        "inference_mode": true,
    })
}

const EXPORTS: Exports = Exports {
    peft: true,
    gguf_adapter: false,
    merge: Err("prefix tuning adds key/value positions no base weight can hold"),
};

const DESCRIPTION: Description = Description {
    name: "Prefix tuning",
    changes_architecture: phrase::ATTENTION_ONLY,
    inference_latency: phrase::EXTRA_KV,
    compute: phrase::LOW,
    use_case: phrase::p("use.prefix", "generation tasks, many tasks"),
    difficulty: phrase::MEDIUM,
};

fn memory(s: &MethodSections) -> MemoryShape {
    MemoryShape {
        extra_keys: s.prompt.n_virtual_tokens,
        ..MemoryShape::default()
    }
}

pub(super) struct PrefixTuning;

impl Method for PrefixTuning {
    fn facts(&self) -> Facts {
        Facts {
            description: DESCRIPTION,
            sections: &["prompt", "prefix"],
            default_lr: 5e-3,
            default_weight_decay: 0.0,
            checkpoint_file: TRAINABLE_FILE,
            exports: EXPORTS,
            peft_type: Some("PREFIX_TUNING"),
            quantizes_base: false,
        }
    }
    fn validate(&self, c: &Check) -> Checked<()> {
        validate_virtual(c.sections, c.seq_len, MethodKind::PrefixTuning)
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        apply(model, a, true)
    }
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
        let kv = kv_width(c) as u64;
        let hidden = match s.prefix.encoder_hidden {
            0 => kv,
            x => x as u64,
        };
        let width = c.num_layers as u64 * 2 * kv;
        s.prompt.n_virtual_tokens as u64 * kv + kv * hidden + hidden + hidden * width + width
    }
    fn memory(&self, s: &MethodSections, _c: &ModelConfig) -> MemoryShape {
        memory(s)
    }
    fn peft_config(&self, s: &MethodSections, base: &str, model: &ModelConfig) -> Option<Value> {
        Some(peft_config(s, base, model, true))
    }
    fn inference_tensors(
        &self,
        model: &DecoderModel,
    ) -> Result<Option<std::collections::HashMap<String, Tensor>>> {
        // the inference form PEFT saves: the MLP folded into the prefixes
        let Some(prefix) = &model.prefix else {
            return Ok(None);
        };
        let past = prefix.past(&model.mode)?.detach();
        let past = past.to_dtype(crate::dtype::wide_dtype(past.dtype()))?;
        Ok(Some(std::collections::HashMap::from([(
            "prompt_embeddings".to_string(),
            past,
        )])))
    }
    fn load_peft(&self, model: &mut DecoderModel, f: &PeftFolder) -> Checked<MethodKind> {
        load_prefix(model, f)
    }
}

pub(super) struct PTuningV2;

impl Method for PTuningV2 {
    fn facts(&self) -> Facts {
        Facts {
            description: Description {
                name: "P-Tuning v2",
                ..DESCRIPTION
            },
            sections: &["prompt"],
            default_lr: 1e-2,
            default_weight_decay: 0.0,
            checkpoint_file: PEFT_FILE,
            exports: EXPORTS,
            peft_type: None,
            quantizes_base: false,
        }
    }
    fn validate(&self, c: &Check) -> Checked<()> {
        validate_virtual(c.sections, c.seq_len, MethodKind::PTuningV2)
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        apply(model, a, false)
    }
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
        s.prompt.n_virtual_tokens as u64 * c.num_layers as u64 * 2 * kv_width(c) as u64
    }
    fn memory(&self, s: &MethodSections, _c: &ModelConfig) -> MemoryShape {
        memory(s)
    }
    fn peft_config(&self, s: &MethodSections, base: &str, model: &ModelConfig) -> Option<Value> {
        Some(peft_config(s, base, model, false))
    }
}

/// The prefix embedding (and with `projection`, prefix tuning's MLP).
fn apply(model: &mut DecoderModel, a: &MethodArgs, projection: bool) -> Result<Vec<Param>> {
    let mut params = vec![];
    let wd = a.weight_decay;
    let c = model.config.clone();
    let kv = c.num_kv_heads * c.head_dim;
    let width = c.num_layers * 2 * kv;
    let n = a.sections.prompt.n_virtual_tokens;
    let mut rng = InitRng(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 5);
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
    let prefix = if !projection {
        let e = normal(n, width, &mut rng)?;
        Prefix {
            embedding: var("prompt_embeddings", e, true)?,
            mlp: None,
        }
    } else {
        let hidden = match a.sections.prefix.encoder_hidden {
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
fn load_prefix(model: &mut DecoderModel, f: &PeftFolder) -> Checked<MethodKind> {
    let (dir, cfg_path, v) = (f.dir, f.config_path, f.config);
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
