//! The `--set` keys: the table of every key with its group, kind and help text, reading
//! and writing a [`TrainConfig`] by key, TOML files of the same keys, and the checks against
//! a model.

use super::targets::*;
use super::*;

/// What kind of value a setting takes (how a form shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum KeyKind {
    Integer,
    Number,
    Bool,
    Choice,
    Text,
}

/// One `--set` key: its group, kind, allowed choices and a one-line help text.
pub struct KeyInfo {
    pub key: &'static str,
    pub group: &'static str,
    pub kind: KeyKind,
    pub choices: &'static [&'static str],
    pub help: &'static str,
}

const fn key(key: &'static str, group: &'static str, kind: KeyKind, help: &'static str) -> KeyInfo {
    KeyInfo {
        key,
        group,
        kind,
        choices: &[],
        help,
    }
}

use KeyKind::{Bool, Integer, Number, Text};

/// Every key `--set` accepts, in the order forms show them.
pub const KEY_INFO: &[KeyInfo] = &[
    key("max_steps", "Training", Integer, "Stop after this many optimizer steps (none: train for `epochs`)."),
    key("epochs", "Training", Number, "Passes over the training split."),
    key("batch_size", "Training", Integer, "Examples per micro-batch."),
    key("grad_accum", "Training", Integer, "Micro-batches per optimizer step (effective batch = batch_size × grad_accum)."),
    key("lr", "Training", Number, "Peak learning rate (none: the method's default)."),
    KeyInfo {
        key: "schedule",
        group: "Training",
        kind: KeyKind::Choice,
        choices: &["cosine", "linear", "constant"],
        help: "How the learning rate decays after warm-up.",
    },
    key("warmup_ratio", "Training", Number, "Fraction of the steps spent warming the learning rate up from 0."),
    key("weight_decay", "Training", Number, "AdamW weight decay (none: the method's default)."),
    key("max_grad_norm", "Training", Number, "Clip the global gradient norm to this (0 = off)."),
    key("seed", "Training", Integer, "Seed for initialisation, shuffling and the eval split: same seed, same run."),
    key("seq_len", "Data", Integer, "Tokens per training row; longer examples are refused unless `truncate` is on."),
    key("packing", "Data", Bool, "Concatenate examples into full rows instead of padding each one."),
    key("truncate", "Data", Bool, "Cut examples longer than `seq_len` instead of refusing the dataset."),
    key("train_on_prompt", "Data", Bool, "Learn the prompt tokens too, not only the answers."),
    key("eval_fraction", "Data", Number, "Share of the records held out for evaluation."),
    key("eval_every", "Evaluation", Integer, "Evaluate every N steps (0 = only before and after training)."),
    key("save_every", "Evaluation", Integer, "Checkpoint every N steps (0 = only at the end)."),
    key("early_stopping_patience", "Evaluation", Integer, "Stop after this many evaluations without a better eval loss (0 = off)."),
    key("sample_tokens", "Evaluation", Integer, "Tokens generated from an eval prompt at each evaluation (0 = no samples)."),
    key("gradient_checkpointing", "Device", Bool, "Recompute activations in the backward pass: less memory, about a third slower."),
    key("device", "Device", Text, "cpu, cuda, cuda:N or metal."),
    KeyInfo {
        key: "dtype",
        group: "Device",
        kind: KeyKind::Choice,
        choices: &["auto", "f32", "bf16"],
        help: "Compute type: bf16 halves weight and activation memory (trainable weights and optimizer state stay f32); auto = bf16 on GPUs with native bf16, f32 elsewhere.",
    },
    key("lora.r", "Method", Integer, "LoRA rank: width of the low-rank update."),
    key("lora.alpha", "Method", Number, "LoRA scale numerator: the update is multiplied by alpha / r."),
    key("lora.dropout", "Method", Number, "Dropout on the LoRA input during training."),
    key("lora.targets", "Method", Text, "Linear modules that get LoRA (comma list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; Phi-3's fused qkv_proj, gate_up_proj; or all-linear)."),
    key("lora.rslora", "Method", Bool, "Rank-stabilised scale alpha / sqrt(r) instead of alpha / r."),
    key("lora.init", "Method", Text, "Start from this PEFT adapter folder instead of a fresh init (none: fresh)."),
    key("lora_plus.lr_ratio", "Method", Number, "LoRA+: B's learning rate over A's."),
    key("ia3.targets", "Method", Text, "(IA)3: modules whose activations are rescaled (attention outputs, MLP inputs)."),
    key("prompt.n_virtual_tokens", "Method", Integer, "Prompt / prefix tuning, P-Tuning v2: how many virtual tokens are learned."),
    key("prefix.encoder_hidden", "Method", Integer, "Prefix tuning: hidden width of the reparameterisation MLP (0 = the key/value width)."),
    key("adapter.bottleneck", "Method", Integer, "Houlsby adapters: width of the bottleneck (none: 64, or half the hidden size where that is smaller)."),
    key("freeze.trainable_layers", "Method", Integer, "Freeze: how many of the last decoder layers train."),
    key("freeze.train_norm", "Method", Bool, "Freeze: train the final norm as well."),
    key("freeze.train_head", "Method", Bool, "Freeze: train the output projection (ignored when tied to the embeddings)."),
    key("bitfit.add_biases", "Method", Bool, "BitFit: add zero-initialised biases to a model that has none."),
];

/// The keys `--set` accepts, for error messages.
pub fn keys() -> impl Iterator<Item = &'static str> {
    KEY_INFO.iter().map(|k| k.key)
}

fn num<T: std::str::FromStr>(key: &str, v: &str, what: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("`{key}`: `{v}` is not {what}"))
}

fn positive(key: &str, v: &str) -> Result<usize, String> {
    let n: usize = num(key, v, "a whole number")?;
    if n == 0 {
        return Err(format!("`{key}` must be at least 1"));
    }
    Ok(n)
}

fn float_in(key: &str, v: &str, lo: f64, hi: f64) -> Result<f64, String> {
    let x: f64 = num(key, v, "a number")?;
    if !(lo..=hi).contains(&x) || !x.is_finite() {
        return Err(format!("`{key}` must be between {lo} and {hi}, not {v}"));
    }
    Ok(x)
}

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{key}`: `{v}` is not true or false")),
    }
}

/// A comma list of HF linear module names, or `all-linear`.
fn parse_targets(key: &str, v: &str) -> Result<Vec<String>, String> {
    let mut targets: Vec<String> = vec![];
    for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if t == "all-linear" || t == "all_linear" {
            targets.extend(LORA_TARGETS.map(String::from));
        } else if LORA_TARGETS.contains(&t) {
            targets.push(t.to_string());
        } else {
            return Err(format!(
                "`{key}`: `{t}` is not a linear module of this model family (use {} or all-linear)",
                LORA_TARGETS.join(", ")
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(t.clone()));
    if targets.is_empty() {
        return Err(format!("`{key}` must name at least one module"));
    }
    Ok(targets)
}

impl TrainConfig {
    /// Apply one `key=value` setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        match key {
            "max_steps" => {
                self.max_steps = if v == "none" || v == "0" {
                    None
                } else {
                    Some(num(key, v, "a whole number")?)
                }
            }
            "epochs" => self.epochs = float_in(key, v, 1e-6, 1e6)?,
            "batch_size" => self.batch_size = positive(key, v)?,
            "grad_accum" => self.grad_accum = positive(key, v)?,
            "lr" if v == "none" => self.lr = None,
            "lr" => self.lr = Some(float_in(key, v, 0.0, 10.0)?),
            "schedule" => {
                self.schedule = match v {
                    "cosine" => Schedule::Cosine,
                    "linear" => Schedule::Linear,
                    "constant" => Schedule::Constant,
                    _ => {
                        return Err(format!(
                            "`schedule`: `{v}` is not one of cosine, linear, constant"
                        ))
                    }
                }
            }
            "warmup_ratio" => self.warmup_ratio = float_in(key, v, 0.0, 1.0)?,
            "weight_decay" if v == "none" => self.weight_decay = None,
            "weight_decay" => self.weight_decay = Some(float_in(key, v, 0.0, 10.0)?),
            "max_grad_norm" => self.max_grad_norm = float_in(key, v, 0.0, 1e9)?,
            "seq_len" => {
                let n = positive(key, v)?;
                if n < 8 {
                    return Err("`seq_len` must be at least 8".into());
                }
                self.seq_len = n
            }
            "packing" => self.packing = boolean(key, v)?,
            "truncate" => self.truncate = boolean(key, v)?,
            "train_on_prompt" => self.train_on_prompt = boolean(key, v)?,
            "eval_every" => self.eval_every = num(key, v, "a whole number")?,
            "save_every" => self.save_every = num(key, v, "a whole number")?,
            "eval_fraction" => self.eval_fraction = float_in(key, v, 0.0, 0.9)?,
            "early_stopping_patience" => {
                self.early_stopping_patience = num(key, v, "a whole number")?
            }
            "sample_tokens" => self.sample_tokens = num(key, v, "a whole number")?,
            "seed" => self.seed = num(key, v, "a whole number")?,
            "gradient_checkpointing" => self.gradient_checkpointing = boolean(key, v)?,
            "device" => self.device = v.to_string(),
            "dtype" => {
                compute_dtype(v, false).map_err(|e| format!("`dtype`: {e}"))?;
                self.dtype = v.to_string()
            }
            "lora.r" => self.lora.r = positive(key, v)?,
            "lora.alpha" => self.lora.alpha = float_in(key, v, 1e-6, 1e6)?,
            "lora.dropout" => self.lora.dropout = float_in(key, v, 0.0, 0.9)? as f32,
            "lora.rslora" => self.lora.rslora = boolean(key, v)?,
            "lora.init" => {
                self.lora.init = if v.is_empty() || v == "none" {
                    None
                } else {
                    let dir = std::path::Path::new(v);
                    if !dir.join("adapter_model.safetensors").is_file() {
                        return Err(format!(
                            "`lora.init`: {v} is not a PEFT adapter folder (no adapter_model.safetensors)"
                        ));
                    }
                    Some(v.to_string())
                }
            }
            "lora.targets" => self.lora.targets = parse_targets(key, v)?,
            "lora_plus.lr_ratio" => self.lora_plus.lr_ratio = float_in(key, v, 1e-3, 1e4)?,
            "ia3.targets" => self.ia3.targets = parse_targets(key, v)?,
            "prompt.n_virtual_tokens" => self.prompt.n_virtual_tokens = positive(key, v)?,
            "prefix.encoder_hidden" => self.prefix.encoder_hidden = num(key, v, "a whole number")?,
            "bitfit.add_biases" => self.bitfit.add_biases = boolean(key, v)?,
            "adapter.bottleneck" => {
                self.adapter.bottleneck = match v {
                    "none" | "" => None,
                    _ => Some(positive(key, v)?),
                }
            }
            "freeze.trainable_layers" => self.freeze.trainable_layers = positive(key, v)?,
            "freeze.train_norm" => self.freeze.train_norm = boolean(key, v)?,
            "freeze.train_head" => self.freeze.train_head = boolean(key, v)?,
            _ => {
                return Err(format!(
                    "unknown setting `{key}` (known: {})",
                    keys().collect::<Vec<_>>().join(", ")
                ))
            }
        }
        Ok(())
    }

    /// The value of one `--set` key as `set` would take it back.
    pub fn get(&self, key: &str) -> Option<String> {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        Some(match key {
            "max_steps" => opt(self.max_steps.map(|v| v.to_string())),
            "epochs" => self.epochs.to_string(),
            "batch_size" => self.batch_size.to_string(),
            "grad_accum" => self.grad_accum.to_string(),
            "lr" => opt(self.lr.map(|v| v.to_string())),
            "schedule" => match self.schedule {
                Schedule::Cosine => "cosine",
                Schedule::Linear => "linear",
                Schedule::Constant => "constant",
            }
            .into(),
            "warmup_ratio" => self.warmup_ratio.to_string(),
            "weight_decay" => opt(self.weight_decay.map(|v| v.to_string())),
            "max_grad_norm" => self.max_grad_norm.to_string(),
            "seq_len" => self.seq_len.to_string(),
            "packing" => self.packing.to_string(),
            "truncate" => self.truncate.to_string(),
            "train_on_prompt" => self.train_on_prompt.to_string(),
            "eval_every" => self.eval_every.to_string(),
            "save_every" => self.save_every.to_string(),
            "eval_fraction" => self.eval_fraction.to_string(),
            "early_stopping_patience" => self.early_stopping_patience.to_string(),
            "sample_tokens" => self.sample_tokens.to_string(),
            "seed" => self.seed.to_string(),
            "gradient_checkpointing" => self.gradient_checkpointing.to_string(),
            "device" => self.device.clone(),
            "dtype" => self.dtype.clone(),
            "lora.r" => self.lora.r.to_string(),
            "lora.alpha" => self.lora.alpha.to_string(),
            "lora.dropout" => self.lora.dropout.to_string(),
            "lora.targets" => self.lora.targets.join(","),
            "lora.rslora" => self.lora.rslora.to_string(),
            "lora.init" => opt(self.lora.init.clone()),
            "lora_plus.lr_ratio" => self.lora_plus.lr_ratio.to_string(),
            "ia3.targets" => self.ia3.targets.join(","),
            "prompt.n_virtual_tokens" => self.prompt.n_virtual_tokens.to_string(),
            "prefix.encoder_hidden" => self.prefix.encoder_hidden.to_string(),
            "adapter.bottleneck" => opt(self.adapter.bottleneck.map(|b| b.to_string())),
            "freeze.trainable_layers" => self.freeze.trainable_layers.to_string(),
            "freeze.train_norm" => self.freeze.train_norm.to_string(),
            "freeze.train_head" => self.freeze.train_head.to_string(),
            "bitfit.add_biases" => self.bitfit.add_biases.to_string(),
            _ => return None,
        })
    }

    /// Whether `key` changes anything for this config's method.
    pub fn key_applies(&self, key: &str) -> bool {
        use MethodKind as M;
        let m = self.method;
        match key.split_once('.').map(|(g, _)| g) {
            Some("lora") => m.is_lora(),
            Some("lora_plus") => m == M::LoraPlus,
            Some("ia3") => m == M::Ia3,
            Some("prompt") => m == M::PromptTuning || m.is_prefix(),
            Some("prefix") => m == M::PrefixTuning,
            Some("adapter") => m == M::Adapter,
            Some("freeze") => m == M::Freeze,
            Some("bitfit") => m == M::Bitfit,
            _ => true,
        }
    }

    /// Apply `key=value`.
    pub fn set_pair(&mut self, pair: &str) -> Result<(), String> {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`--set {pair}`: expected key=value"))?;
        self.set(k.trim(), v)
    }

    /// Apply a TOML table of the same keys (`[lora]` sections or dotted keys).
    pub fn apply_toml(&mut self, text: &str, origin: &str) -> Result<(), String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{origin}: not valid TOML: {}", e.message()))?;
        let mut flat = vec![];
        flatten("", &toml::Value::Table(table), &mut flat);
        for (k, v) in flat {
            if k == "method" {
                self.set_method(MethodKind::parse(&v).map_err(|e| format!("{origin}: {e}"))?);
                continue;
            }
            self.set(&k, &v).map_err(|e| format!("{origin}: {e}"))?;
        }
        Ok(())
    }

    /// Check combinations that no single key can, against the model: called before a run
    /// starts.
    pub fn validate(&self, model: &whetstone_formats::ModelConfig) -> Result<(), String> {
        let num_layers = model.num_layers;
        if self.method == MethodKind::Freeze && self.freeze.trainable_layers > num_layers {
            return Err(format!(
                "`freeze.trainable_layers` is {} but the model has only {num_layers} layers",
                self.freeze.trainable_layers
            ));
        }
        let virtual_tokens = self.method == MethodKind::PromptTuning || self.method.is_prefix();
        if virtual_tokens && self.prompt.n_virtual_tokens >= self.seq_len {
            return Err(format!(
                "`prompt.n_virtual_tokens` is {} but must be below `seq_len` ({}) for {}",
                self.prompt.n_virtual_tokens,
                self.seq_len,
                self.method.as_str()
            ));
        }
        if self.method == MethodKind::Adapter
            && self.adapter.width(model.hidden_size) >= model.hidden_size
        {
            return Err(format!(
                "`adapter.bottleneck` is {} but must be below the hidden size ({})",
                self.adapter.width(model.hidden_size),
                model.hidden_size
            ));
        }
        if self.method.is_lora() {
            resolve_targets("lora.targets", &self.lora.targets, model)?;
        }
        if self.method == MethodKind::Ia3 {
            resolve_targets("ia3.targets", &self.ia3.targets, model)?;
        }
        if let Some((key, p)) = model.dropouts.first() {
            return Err(format!(
                "the model's config.json sets `{key}` = {p}: training with the model's own dropout is not supported, and ignoring it would train a different function from transformers; set it to 0.0 in config.json to train without it"
            ));
        }
        if self.method == MethodKind::Bitfit
            && !(model.qkv_bias || model.o_bias || model.mlp_bias)
            && !self.bitfit.add_biases
        {
            return Err(format!(
                "method `bitfit` trains bias terms and this {} model has none; set `bitfit.add_biases=true` to add zero-initialised ones, or pick lora or ia3",
                model.family.as_str()
            ));
        }
        Ok(())
    }
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|x| match x {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.push((prefix.to_string(), items.join(",")));
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}
