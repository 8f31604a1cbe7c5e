//! The run configuration: one serde struct, saved with every run (DESIGN.md §3).
//!
//! Users change it with `--set key=value` (dotted keys for method parameters) or a TOML
//! file of the same keys; both go through [`TrainConfig::set`], so an unknown key or a bad
//! value is one error naming the key, never a silently ignored setting.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum MethodKind {
    Full,
    Freeze,
    Lora,
    /// LoRA over a frozen base stored as NF4 (4-bit NormalFloat, double-quantized maxima).
    Qlora,
    /// LoRA with a higher learning rate for B (`lora_plus.lr_ratio` × A's).
    LoraPlus,
    /// Weight-decomposed LoRA: LoRA's direction with a learned per-output magnitude.
    Dora,
    /// Trainable virtual-token embeddings in front of every input.
    PromptTuning,
    /// Houlsby adapters: bottleneck MLPs after the attention and the FFN of every layer.
    Adapter,
    /// (IA)3: learned scaling vectors on k, v and the FFN.
    Ia3,
    /// Only the bias terms train.
    Bitfit,
    /// Per-layer key/value prefixes, produced by a 2-layer MLP while training.
    PrefixTuning,
    /// P-Tuning v2: the same deep prefixes, trained directly (no MLP).
    PTuningV2,
}

impl MethodKind {
    /// In the comparison table's order (DESIGN.md §3).
    pub const ALL: [MethodKind; 12] = [
        MethodKind::Full,
        MethodKind::Freeze,
        MethodKind::Lora,
        MethodKind::Qlora,
        MethodKind::Dora,
        MethodKind::LoraPlus,
        MethodKind::Ia3,
        MethodKind::Bitfit,
        MethodKind::PromptTuning,
        MethodKind::PrefixTuning,
        MethodKind::PTuningV2,
        MethodKind::Adapter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Full => "full",
            MethodKind::Freeze => "freeze",
            MethodKind::Lora => "lora",
            MethodKind::Qlora => "qlora",
            MethodKind::LoraPlus => "lora_plus",
            MethodKind::Dora => "dora",
            MethodKind::PromptTuning => "prompt_tuning",
            MethodKind::Adapter => "adapter",
            MethodKind::Ia3 => "ia3",
            MethodKind::Bitfit => "bitfit",
            MethodKind::PrefixTuning => "prefix_tuning",
            MethodKind::PTuningV2 => "p_tuning_v2",
        }
    }

    /// Per-layer key/value prefixes (prefix tuning and P-Tuning v2).
    pub fn is_prefix(self) -> bool {
        matches!(self, MethodKind::PrefixTuning | MethodKind::PTuningV2)
    }

    /// Methods that train LoRA matrices (and save PEFT LoRA adapters).
    pub fn is_lora(self) -> bool {
        matches!(
            self,
            MethodKind::Lora | MethodKind::Qlora | MethodKind::LoraPlus | MethodKind::Dora
        )
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let s = match s {
            "lora+" => "lora_plus",
            "ia³" | "(ia)3" => "ia3",
            "prefix" => "prefix_tuning",
            "p-tuning-v2" | "ptuning_v2" | "p_tuning" => "p_tuning_v2",
            other => other,
        };
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|m| m.as_str()).collect();
                format!(
                    "unknown method `{s}` (this build trains: {})",
                    known.join(", ")
                )
            })
    }

    /// The learning rate METHODS.md starts from.
    pub fn default_lr(self) -> f64 {
        match self {
            MethodKind::Full | MethodKind::Freeze => 2e-5,
            MethodKind::Lora | MethodKind::Qlora | MethodKind::LoraPlus | MethodKind::Dora => 2e-4,
            MethodKind::PrefixTuning => 5e-3,
            MethodKind::PTuningV2 => 1e-2,
            MethodKind::Ia3 => 3e-3,
            MethodKind::PromptTuning => 3e-2,
            MethodKind::Adapter => 1e-3,
            MethodKind::Bitfit => 1e-3,
        }
    }

    pub fn default_weight_decay(self) -> f64 {
        match self {
            MethodKind::Full | MethodKind::Freeze => 0.01,
            MethodKind::Lora
            | MethodKind::Qlora
            | MethodKind::PrefixTuning
            | MethodKind::PTuningV2
            | MethodKind::LoraPlus
            | MethodKind::Dora
            | MethodKind::PromptTuning
            | MethodKind::Adapter
            | MethodKind::Ia3
            | MethodKind::Bitfit => 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

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
    /// QLoRA's starting point (METHODS.md): every linear, r 16, alpha 32.
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS, Default)]
#[serde(default)]
#[ts(export)]
pub struct PrefixConfig {
    /// Hidden width of the reparameterisation MLP (prefix tuning); 0 = the key/value width,
    /// as PEFT defaults.
    pub encoder_hidden: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS, Default)]
#[serde(default)]
#[ts(export)]
pub struct BitfitConfig {
    /// Add zero-initialised biases to every linear of a model that has none (Llama,
    /// Mistral), so BitFit has something to train.
    pub add_biases: bool,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
#[ts(export)]
pub struct TrainConfig {
    pub method: MethodKind,
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
    pub gradient_checkpointing: bool,
    pub device: String,
    pub dtype: String,
    pub lora: LoraConfig,
    pub lora_plus: LoraPlusConfig,
    pub ia3: Ia3Config,
    pub prompt: PromptConfig,
    pub prefix: PrefixConfig,
    pub adapter: AdapterConfig,
    pub freeze: FreezeConfig,
    pub bitfit: BitfitConfig,
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
            gradient_checkpointing: false,
            device: "cpu".into(),
            dtype: "auto".into(),
            lora: LoraConfig::default(),
            lora_plus: LoraPlusConfig::default(),
            ia3: Ia3Config::default(),
            prompt: PromptConfig::default(),
            prefix: PrefixConfig::default(),
            adapter: AdapterConfig::default(),
            freeze: FreezeConfig::default(),
            bitfit: BitfitConfig::default(),
        }
    }
}

impl TrainConfig {
    pub fn for_method(method: MethodKind) -> Self {
        let mut c = Self::default();
        c.set_method(method);
        c
    }

    /// Choose the method; QLoRA brings its own LoRA defaults (r 16, alpha 32, every linear)
    /// unless the LoRA settings were already changed.
    pub fn set_method(&mut self, method: MethodKind) {
        if method == MethodKind::Qlora && self.lora == LoraConfig::default() {
            self.lora = LoraConfig::qlora();
        }
        self.method = method;
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
mod targets;

pub use keys::{keys, KeyInfo, KeyKind, KEY_INFO};
pub use targets::{model_linears, resolve_targets, LORA_TARGETS};

#[cfg(test)]
mod tests;
