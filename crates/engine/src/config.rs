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

/// Every linear module name a target list may use: the Llama layout's seven and Phi-3's
/// fused `qkv_proj` and `gate_up_proj`; `all-linear` is all of them.
pub const LORA_TARGETS: [&str; 9] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "qkv_proj",
    "gate_up_proj",
];

/// The linear modules of one decoder layer of `model`, by their short names.
pub fn model_linears(model: &whetstone_formats::ModelConfig) -> &'static [&'static str] {
    if model.fused_projections {
        &["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    } else {
        &[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    }
}

/// The modules of `model` a target list (`key`'s value) selects. `all-linear` selects every
/// one. In a model with fused projections (Phi-3), naming all of q, k and v selects
/// `qkv_proj` and both gate and up `gate_up_proj`, as one adapter covers what the three
/// would; naming only some of them, or a fused name in a model without fusion, is an error.
pub fn resolve_targets(
    key: &str,
    targets: &[String],
    model: &whetstone_formats::ModelConfig,
) -> Result<Vec<&'static str>, String> {
    let has = |t: &str| targets.iter().any(|x| x == t);
    if LORA_TARGETS.iter().all(|t| has(t)) {
        return Ok(model_linears(model).to_vec());
    }
    let family = model.family.as_str();
    let mut out = vec![];
    for &m in model_linears(model) {
        let parts: &[&str] = match m {
            "qkv_proj" => &["q_proj", "k_proj", "v_proj"],
            "gate_up_proj" => &["gate_proj", "up_proj"],
            _ => &[],
        };
        let named = parts.iter().filter(|p| has(p)).count();
        if named > 0 && named < parts.len() {
            return Err(format!(
                "`{key}`: this {family} model computes {} in one module, `{m}`: name `{m}` (or all of them)",
                parts.join(", ")
            ));
        }
        if has(m) || (named > 0 && named == parts.len()) {
            out.push(m);
        }
    }
    // every name is one of LORA_TARGETS (`parse_targets`); the fused ones exist only in
    // models with fused projections
    if let Some(t) = targets
        .iter()
        .find(|t| !model.fused_projections && matches!(t.as_str(), "qkv_proj" | "gate_up_proj"))
    {
        return Err(format!(
            "`{key}`: `{t}` is not a module of this {family} model (its linear modules: {})",
            model_linears(model).join(", ")
        ));
    }
    if out.is_empty() {
        return Err(format!(
            "`{key}` names no module of this {family} model (its linear modules: {})",
            model_linears(model).join(", ")
        ));
    }
    Ok(out)
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

#[cfg(test)]
mod tests {

    #[test]
    fn every_key_reads_back_what_set_takes() {
        for m in MethodKind::ALL {
            let c = TrainConfig::for_method(m);
            for k in KEY_INFO {
                let v = c
                    .get(k.key)
                    .unwrap_or_else(|| panic!("no value for {}", k.key));
                let mut d = c.clone();
                d.set(k.key, &v)
                    .unwrap_or_else(|e| panic!("{}={v} does not set back: {e}", k.key));
                assert_eq!(d, c, "{}={v} changed the config", k.key);
            }
        }
        let mut c = TrainConfig::default();
        assert!(c.set("nonsense", "1").unwrap_err().contains("lora.r"));
        assert!(c.get("nonsense").is_none());
        assert!(c.key_applies("lora.r"), "the default method is LoRA");
        c.set_method(MethodKind::Ia3);
        assert!(
            !c.key_applies("lora.r") && c.key_applies("ia3.targets") && c.key_applies("seq_len")
        );
    }
    use super::*;

    #[test]
    fn set_parses_and_rejects_with_the_key() {
        let mut c = TrainConfig::default();
        c.set_pair("lora.r=16").unwrap();
        c.set_pair("lora.targets=q_proj, v_proj").unwrap();
        c.set_pair("max_steps=30").unwrap();
        c.set_pair("schedule=linear").unwrap();
        assert_eq!(c.lora.r, 16);
        assert_eq!(c.lora.targets, ["q_proj", "v_proj"]);
        assert_eq!(c.max_steps, Some(30));
        let e = c.set_pair("lora.rank=4").unwrap_err();
        assert!(e.contains("unknown setting `lora.rank`"), "{e}");
        let e = c.set_pair("batch_size=0").unwrap_err();
        assert!(e.contains("`batch_size`"), "{e}");
        let e = c.set_pair("lr=fast").unwrap_err();
        assert!(e.contains("`lr`") && e.contains("fast"), "{e}");
        let e = c.set_pair("lora.targets=qkv").unwrap_err();
        assert!(e.contains("`qkv`"), "{e}");
        assert!(c.set_pair("nonsense").unwrap_err().contains("key=value"));
    }

    #[test]
    fn toml_uses_the_same_keys() {
        let mut c = TrainConfig::default();
        c.apply_toml(
            "method = \"freeze\"\nlr = 1e-4\n[lora]\nr = 4\ntargets = [\"q_proj\", \"k_proj\"]\n[freeze]\ntrainable_layers = 1\n",
            "run.toml",
        )
        .unwrap();
        assert_eq!(c.method, MethodKind::Freeze);
        assert_eq!(c.lr, Some(1e-4));
        assert_eq!(c.lora.r, 4);
        assert_eq!(c.lora.targets, ["q_proj", "k_proj"]);
        assert_eq!(c.freeze.trainable_layers, 1);
        let e = c.apply_toml("batch = 3", "run.toml").unwrap_err();
        assert!(e.starts_with("run.toml: unknown setting `batch`"), "{e}");
        let e = c.apply_toml("lr = [", "run.toml").unwrap_err();
        assert!(e.starts_with("run.toml: not valid TOML"), "{e}");
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = TrainConfig::for_method(MethodKind::Full);
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, back);
        assert_eq!(back.lr(), 2e-5);
    }
}
