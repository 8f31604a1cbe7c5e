//! Prompt tuning: learned virtual-token embeddings before the input.

use super::*;
use crate::setting::{key, positive, KeyKind::Integer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct PromptConfig {
    /// How many virtual tokens are learned.
    pub n_virtual_tokens: usize,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            n_virtual_tokens: 20,
        }
    }
}

impl Section for PromptConfig {
    const KEYS: &'static [KeyInfo] = &[key(
        "prompt.n_virtual_tokens",
        "Method",
        Integer,
        "Prompt / prefix tuning, P-Tuning v2: how many virtual tokens are learned.",
    )];

    fn set(&mut self, k: &str, v: &str) -> Option<Checked<()>> {
        (k == "prompt.n_virtual_tokens").then(|| positive(k, v).map(|n| self.n_virtual_tokens = n))
    }

    fn get(&self, k: &str) -> Option<String> {
        (k == "prompt.n_virtual_tokens").then(|| self.n_virtual_tokens.to_string())
    }
}

/// Virtual tokens take places in the sequence: fewer than `seq_len` of them.
pub(super) fn validate_virtual(
    s: &MethodSections,
    seq_len: usize,
    method: MethodKind,
) -> std::result::Result<(), String> {
    if s.prompt.n_virtual_tokens >= seq_len {
        return Err(format!(
            "`prompt.n_virtual_tokens` is {} but must be below `seq_len` ({seq_len}) for {}",
            s.prompt.n_virtual_tokens,
            method.as_str()
        ));
    }
    Ok(())
}

pub(super) struct PromptTuning;

impl Method for PromptTuning {
    fn facts(&self) -> Facts {
        Facts {
            description: Description {
                name: "Prompt tuning",
                changes_architecture: phrase::INPUT_ONLY,
                inference_latency: phrase::EXTRA_TOKENS,
                compute: phrase::VERY_LOW,
                use_case: phrase::p("use.prompt", "large models, many tasks"),
                difficulty: phrase::MEDIUM,
            },
            sections: &["prompt"],
            default_lr: 3e-2,
            default_weight_decay: 0.0,
            checkpoint_file: PEFT_FILE,
            exports: Exports {
                peft: true,
                gguf_adapter: false,
                merge: Err("prompt tuning adds virtual tokens no base weight can hold"),
            },
            peft_type: Some("PROMPT_TUNING"),
            quantizes_base: false,
        }
    }
    fn validate(&self, c: &Check) -> Checked<()> {
        validate_virtual(c.sections, c.seq_len, MethodKind::PromptTuning)
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        apply(model, a)
    }
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
        (s.prompt.n_virtual_tokens * c.hidden_size) as u64
    }
    fn memory(&self, s: &MethodSections, _c: &ModelConfig) -> MemoryShape {
        // the virtual tokens are rows of every example, and keys of every query
        MemoryShape {
            extra_rows: s.prompt.n_virtual_tokens,
            extra_keys: s.prompt.n_virtual_tokens,
            ..MemoryShape::default()
        }
    }
    fn peft_config(&self, s: &MethodSections, base: &str, model: &ModelConfig) -> Option<Value> {
        Some(serde_json::json!({
            "peft_type": "PROMPT_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "num_virtual_tokens": s.prompt.n_virtual_tokens,
            "token_dim": model.hidden_size,
            "num_transformer_submodules": 1,
            "num_attention_heads": model.num_heads,
            "num_layers": model.num_layers,
            "prompt_tuning_init": "RANDOM",
            "inference_mode": true,
        }))
    }
    fn load_peft(&self, model: &mut DecoderModel, f: &PeftFolder) -> Checked<MethodKind> {
        let (dir, cfg_path, v) = (f.dir, f.config_path, f.config);
        let n = v
            .get("num_virtual_tokens")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| {
                err(
                    cfg_path,
                    &"field `num_virtual_tokens`: missing or not a number",
                )
            })? as usize;
        let mut s = defaults_for(MethodKind::PromptTuning);
        s.prompt.n_virtual_tokens = n;
        let params =
            apply_default(model, MethodKind::PromptTuning, &s).map_err(|e| err(dir, &e))?;
        let (wf, tensors) = adapter_tensors(dir, &model.device)?;
        load_params(&params, &tensors).map_err(|e| err(&wf, &e))?;
        Ok(MethodKind::PromptTuning)
    }
}

/// `n_virtual_tokens` embeddings, initialised from random vocabulary rows.
fn apply(model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
    let mut params = vec![];
    let wd = a.weight_decay;
    // init from the embeddings of random vocabulary rows (seeded)
    let n = a.sections.prompt.n_virtual_tokens;
    let vocab = model.embed_tokens.dim(0)? as u64;
    let mut s = a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
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
    Ok(params)
}
