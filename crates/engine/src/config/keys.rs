//! The `--set` keys: the table of the run's own keys (each method's keys live with the
//! method), reading and writing a [`TrainConfig`] by key, TOML files of the same keys, and
//! the checks against a model.

use super::*;
use crate::setting::{boolean, choice, float_in, key, num, positive, KeyInfo, KeyKind};

use KeyKind::{Bool, Integer, Number, Text};

/// The keys of the run itself (not of a method), in the order forms show them.
pub const GENERAL_KEYS: &[KeyInfo] = &[
    choice("objective", "Training", &["sft", "dpo", "orpo", "kto"], "What the run optimises: sft = next-token loss on the answers; dpo = prefer each pair's chosen answer over the rejected one, relative to the model before training; orpo = SFT on the chosen answer plus an odds-ratio term (no reference pass, the cheapest); kto = answers rated desirable or undesirable."),
    key("max_steps", "Training", Integer, "Stop after this many optimizer steps (none: train for `epochs`)."),
    key("epochs", "Training", Number, "Passes over the training split."),
    key("batch_size", "Training", Integer, "Examples per micro-batch."),
    key("grad_accum", "Training", Integer, "Micro-batches per optimizer step (effective batch = batch_size × grad_accum)."),
    key("lr", "Training", Number, "Peak learning rate (none: the method's default)."),
    choice("schedule", "Training", &["cosine", "linear", "constant"], "How the learning rate decays after warm-up."),
    key("warmup_ratio", "Training", Number, "Fraction of the steps spent warming the learning rate up from 0."),
    key("weight_decay", "Training", Number, "AdamW weight decay (none: the method's default)."),
    key("max_grad_norm", "Training", Number, "Clip the global gradient norm to this (0 = off)."),
    key("seed", "Training", Integer, "Seed for initialisation, shuffling and (unless `split_seed` is set) the eval split: same seed, same run."),
    key("split_seed", "Data", Integer, "Seed of the train/eval split (none: `seed`); fix it to compare or soup runs of different seeds on the same held-out records."),
    key("seq_len", "Data", Integer, "Tokens per training row; longer examples are refused unless `truncate` is on."),
    key("packing", "Data", Bool, "Concatenate examples into full rows instead of padding each one."),
    key("truncate", "Data", Bool, "Cut examples longer than `seq_len` instead of refusing the dataset."),
    key("train_on_prompt", "Data", Bool, "Learn the prompt tokens too, not only the answers."),
    key("eval_fraction", "Data", Number, "Share of the records held out for evaluation."),
    key("eval_every", "Evaluation", Integer, "Evaluate every N steps (0 = only before and after training)."),
    key("save_every", "Evaluation", Integer, "Checkpoint every N steps (0 = only at the end)."),
    key("early_stopping_patience", "Evaluation", Integer, "Stop after this many evaluations without a better eval loss (0 = off)."),
    key("sample_tokens", "Evaluation", Integer, "Tokens generated from an eval prompt at each evaluation (0 = no samples)."),
    key("dpo.beta", "Preference", Number, "DPO: how closely the policy stays to the model before training (higher = closer)."),
    key("dpo.label_smoothing", "Preference", Number, "DPO: the share of pairs assumed mislabelled (conservative DPO; 0 = plain DPO)."),
    key("orpo.beta", "Preference", Number, "ORPO: the weight of the odds-ratio term beside the SFT loss on the chosen answer."),
    key("kto.beta", "Preference", Number, "KTO: how closely the policy stays to the model before training."),
    key("kto.desirable_weight", "Preference", Number, "KTO: loss weight of desirable answers."),
    key("kto.undesirable_weight", "Preference", Number, "KTO: loss weight of undesirable answers."),
    key("gradient_checkpointing", "Device", Bool, "Recompute activations in the backward pass: less memory, about a third slower."),
    key("device", "Device", Text, "cpu, cuda, cuda:N or metal."),
    choice("dtype", "Device", &["auto", "f32", "bf16"], "Compute type: bf16 halves weight and activation memory (trainable weights and optimizer state stay f32); auto = bf16 on GPUs with native bf16, f32 elsewhere."),
];

/// Every key `--set` accepts, in the order forms show them: the run's, then each method
/// section's.
pub fn key_info() -> impl Iterator<Item = &'static KeyInfo> {
    GENERAL_KEYS.iter().chain(MethodSections::keys())
}

/// The keys `--set` accepts, for error messages.
pub fn keys() -> impl Iterator<Item = &'static str> {
    key_info().map(|k| k.key)
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
            "objective" => {
                self.objective = ObjectiveKind::ALL
                    .into_iter()
                    .find(|o| o.as_str() == v)
                    .ok_or_else(|| {
                        format!("`objective`: `{v}` is not one of sft, dpo, orpo, kto")
                    })?
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
            "split_seed" if v == "none" => self.split_seed = None,
            "split_seed" => self.split_seed = Some(num(key, v, "a whole number")?),
            "dpo.beta" => self.dpo.beta = float_in(key, v, 1e-6, 1e3)?,
            "dpo.label_smoothing" => self.dpo.label_smoothing = float_in(key, v, 0.0, 0.49)?,
            "orpo.beta" => self.orpo.beta = float_in(key, v, 0.0, 1e3)?,
            "kto.beta" => self.kto.beta = float_in(key, v, 1e-6, 1e3)?,
            "kto.desirable_weight" => self.kto.desirable_weight = float_in(key, v, 0.0, 1e3)?,
            "kto.undesirable_weight" => self.kto.undesirable_weight = float_in(key, v, 0.0, 1e3)?,
            "gradient_checkpointing" => self.gradient_checkpointing = boolean(key, v)?,
            "device" => self.device = v.to_string(),
            "dtype" => {
                compute_dtype(v, false).map_err(|e| format!("`dtype`: {e}"))?;
                self.dtype = v.to_string()
            }
            _ => {
                return self.methods.set(key, v).unwrap_or_else(|| {
                    Err(format!(
                        "unknown setting `{key}` (known: {})",
                        keys().collect::<Vec<_>>().join(", ")
                    ))
                })
            }
        }
        Ok(())
    }

    /// The value of one `--set` key as `set` would take it back.
    pub fn get(&self, key: &str) -> Option<String> {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        Some(match key {
            "max_steps" => opt(self.max_steps.map(|v| v.to_string())),
            "objective" => self.objective.as_str().into(),
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
            "split_seed" => opt(self.split_seed.map(|v| v.to_string())),
            "dpo.beta" => self.dpo.beta.to_string(),
            "dpo.label_smoothing" => self.dpo.label_smoothing.to_string(),
            "orpo.beta" => self.orpo.beta.to_string(),
            "kto.beta" => self.kto.beta.to_string(),
            "kto.desirable_weight" => self.kto.desirable_weight.to_string(),
            "kto.undesirable_weight" => self.kto.undesirable_weight.to_string(),
            "gradient_checkpointing" => self.gradient_checkpointing.to_string(),
            "device" => self.device.clone(),
            "dtype" => self.dtype.clone(),
            _ => return self.methods.get(key),
        })
    }

    /// Whether `key` changes anything for this config's method.
    pub fn key_applies(&self, key: &str) -> bool {
        match key.split_once('.') {
            Some((section @ ("dpo" | "orpo" | "kto"), _)) => self.objective.as_str() == section,
            Some((section, _)) => self.method.spec().facts().sections.contains(&section),
            None => true,
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
        self.method.spec().validate(&crate::methods::Check {
            sections: &self.methods,
            seq_len: self.seq_len,
            model,
        })?;
        if self.objective.is_preference() && self.packing {
            return Err(format!(
                "`packing` cannot be used with objective {}: each pair or rated answer must stay a row of its own",
                self.objective.as_str()
            ));
        }
        if let Some((key, p)) = model.dropouts.first() {
            return Err(format!(
                "the model's config.json sets `{key}` = {p}: training with the model's own dropout is not supported, and ignoring it would train a different function from transformers; set it to 0.0 in config.json to train without it"
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
