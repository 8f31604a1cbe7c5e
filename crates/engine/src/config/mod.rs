//! The run configuration: one serde struct, saved with every run.
//!
//! Users change it with `--set key=value` (dotted keys for method parameters) or a TOML
//! file of the same keys; both go through [`TrainConfig::set`], so an unknown key or a bad
//! value is one error naming the key, never a silently ignored setting.

use serde::{Deserialize, Serialize};

/// What a run optimises (see `train::objective`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum ObjectiveKind {
    /// Supervised fine-tuning: next-token NLL over the trained tokens.
    #[default]
    Sft,
    /// Direct preference optimisation (Rafailov et al. 2023) over chosen / rejected pairs.
    Dpo,
    /// Odds-ratio preference optimisation (Hong et al. 2024): SFT on the chosen answer plus
    /// an odds-ratio term; no reference model.
    Orpo,
    /// Kahneman–Tversky optimisation (Ethayarajh et al. 2024) over answers rated desirable
    /// or undesirable.
    Kto,
}

impl ObjectiveKind {
    pub const ALL: [ObjectiveKind; 4] = [
        ObjectiveKind::Sft,
        ObjectiveKind::Dpo,
        ObjectiveKind::Orpo,
        ObjectiveKind::Kto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectiveKind::Sft => "sft",
            ObjectiveKind::Dpo => "dpo",
            ObjectiveKind::Orpo => "orpo",
            ObjectiveKind::Kto => "kto",
        }
    }

    /// Whether the objective learns from preferences (pairs or ratings) rather than text.
    pub fn is_preference(self) -> bool {
        self != ObjectiveKind::Sft
    }

    /// Whether it compares the policy with the model before training (DPO, KTO): those
    /// log-probabilities are computed once, before the first step, and kept with the run.
    pub fn needs_reference(self) -> bool {
        matches!(self, ObjectiveKind::Dpo | ObjectiveKind::Kto)
    }
}

/// DPO's settings (`dpo.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct DpoConfig {
    /// How strongly the policy is tied to the reference (the KL weight).
    pub beta: f64,
    /// The share of pairs assumed mislabelled (conservative DPO); 0 = plain DPO.
    pub label_smoothing: f64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            label_smoothing: 0.0,
        }
    }
}

/// ORPO's settings (`orpo.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct OrpoConfig {
    /// The weight of the odds-ratio term beside the SFT loss (the paper's lambda).
    pub beta: f64,
}

impl Default for OrpoConfig {
    fn default() -> Self {
        Self { beta: 0.1 }
    }
}

/// KTO's settings (`kto.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct KtoConfig {
    pub beta: f64,
    /// Loss weight of desirable answers.
    pub desirable_weight: f64,
    /// Loss weight of undesirable answers.
    pub undesirable_weight: f64,
}

impl Default for KtoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct TrainConfig {
    pub method: MethodKind,
    /// What the run optimises (`sft`).
    pub objective: ObjectiveKind,
    /// Stop after this many optimizer steps (overrides `epochs`).
    #[ts(type = "number | null")]
    pub max_steps: Option<u64>,
    pub epochs: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// `None`: the method's default.
    pub lr: Option<f64>,
    pub schedule: Schedule,
    pub warmup_ratio: f64,
    /// `None`: the method's default.
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip; 0 = off.
    pub max_grad_norm: f64,
    pub seq_len: usize,
    /// Concatenate examples into full `seq_len` rows instead of padding each.
    pub packing: bool,
    /// Cut examples longer than `seq_len` instead of refusing the dataset.
    pub truncate: bool,
    /// Learn the prompt tokens too, not only the assistant's answers.
    pub train_on_prompt: bool,
    /// Evaluate every N steps (0 = only before and after training).
    #[ts(type = "number")]
    pub eval_every: u64,
    /// Checkpoint every N steps (0 = only at the end).
    #[ts(type = "number")]
    pub save_every: u64,
    pub eval_fraction: f64,
    /// Stop after this many evaluations without a better eval loss (0 = off).
    pub early_stopping_patience: usize,
    /// Tokens generated from an eval prompt at each evaluation (0 = no samples).
    pub sample_tokens: usize,
    #[ts(type = "number")]
    pub seed: u64,
    /// Seed of the train/eval split; `None`: `seed`. A seed sweep fixes it, so every run
    /// (and a soup of them) is measured on the same held-out records.
    #[ts(type = "number | null")]
    pub split_seed: Option<u64>,
    pub gradient_checkpointing: bool,
    pub device: String,
    pub dtype: String,
    /// The preference objectives' settings.
    pub dpo: DpoConfig,
    pub orpo: OrpoConfig,
    pub kto: KtoConfig,
    /// Every method's settings section (`lora`, `ia3`, ...), at the top level of the
    /// saved config.
    #[serde(flatten)]
    pub methods: MethodSections,
}

/// A `dtype` choice as the model computes in it: `f32`, `bf16`, or for `auto` bf16 where the
/// device has it natively (`native_bf16`, see [`crate::device::native_bf16`]), else f32.
pub fn compute_dtype(choice: &str, native_bf16: bool) -> Result<candle_core::DType, String> {
    match choice {
        "f32" => Ok(candle_core::DType::F32),
        "bf16" => Ok(candle_core::DType::BF16),
        "auto" if native_bf16 => Ok(candle_core::DType::BF16),
        "auto" => Ok(candle_core::DType::F32),
        "f16" => Err(
            "`f16` is not one of auto, f32, bf16 (f16 needs loss scaling, which \
                      Whetstone does not do; bf16 has f32's range)"
                .into(),
        ),
        other => Err(format!("`{other}` is not one of auto, f32, bf16")),
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: MethodKind::Lora,
            objective: ObjectiveKind::Sft,
            max_steps: None,
            epochs: 1.0,
            batch_size: 4,
            grad_accum: 1,
            lr: None,
            schedule: Schedule::Cosine,
            warmup_ratio: 0.03,
            weight_decay: None,
            max_grad_norm: 1.0,
            seq_len: 512,
            packing: false,
            truncate: false,
            train_on_prompt: false,
            eval_every: 50,
            save_every: 50,
            eval_fraction: 0.1,
            early_stopping_patience: 0,
            sample_tokens: 32,
            seed: 42,
            split_seed: None,
            gradient_checkpointing: false,
            device: "cpu".into(),
            dtype: "auto".into(),
            dpo: DpoConfig::default(),
            orpo: OrpoConfig::default(),
            kto: KtoConfig::default(),
            methods: MethodSections::default(),
        }
    }
}

impl TrainConfig {
    pub fn for_method(method: MethodKind) -> Self {
        let mut c = Self::default();
        c.set_method(method);
        c
    }

    /// Choose the method; it may bring defaults of its own (QLoRA: r 16, alpha 32, every
    /// linear, unless the LoRA settings were already changed).
    pub fn set_method(&mut self, method: MethodKind) {
        method.spec().adjust_defaults(&mut self.methods);
        self.method = method;
    }

    /// What the method's `apply` needs from this config.
    pub fn method_args(&self) -> crate::methods::MethodArgs<'_> {
        crate::methods::MethodArgs {
            kind: self.method,
            sections: &self.methods,
            seed: self.seed,
            weight_decay: self.weight_decay(),
        }
    }

    /// The seed that picks the eval split.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed)
    }

    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or_else(|| self.method.default_lr())
    }

    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
            .unwrap_or_else(|| self.method.default_weight_decay())
    }

    /// The dtype the model computes in (see [`compute_dtype`]).
    pub fn compute_dtype(&self, native_bf16: bool) -> candle_core::DType {
        compute_dtype(&self.dtype, native_bf16).unwrap_or(candle_core::DType::F32)
    }
}

mod keys;

pub use crate::methods::{
    AdapterConfig, BitfitConfig, FreezeConfig, Ia3Config, LoraConfig, LoraPlusConfig, MethodKind,
    MethodSections, PrefixConfig, PromptConfig,
};
pub use crate::optim::Schedule;
pub use crate::setting::{KeyInfo, KeyKind};
pub use crate::targets::{model_linears, resolve_targets, LORA_TARGETS};
pub use keys::{key_info, keys, GENERAL_KEYS};

#[cfg(test)]
mod tests;
