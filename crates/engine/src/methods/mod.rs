//! Fine-tuning methods: one file per family, and the registry the rest of the code asks.
//!
//! Each method is a [`Method`]: its description for the comparison table, its settings
//! section and keys, its defaults, which tensors it makes trainable (`apply`), how many it
//! trains and what it adds to a step's memory (the estimator), what its checkpoint and PEFT
//! config hold, and which export formats can express it. [`MethodKind`] is the key, and
//! [`MethodKind::spec`] the one lookup; a new method is one new file plus one line in
//! `registry!` (and one in `sections!` if it has settings), plus its translations in the UI.
//!
//! Frozen weights stay plain tensors; only what a method trains becomes a `Var`, so the
//! optimizer never sees the rest. Names are the ones other tools use — HF parameter names
//! for Full/Freeze, PEFT's `base_model.model.<module>.lora_A.weight` for LoRA — because they
//! are the keys of checkpoints and exports.

use crate::linear::{BaseWeight, Linear, LinearAdapter, TrainMode};
use crate::model::{Bottleneck, DecoderModel, Prefix};
use crate::params::{load_params, Param};
use crate::setting::KeyInfo;
use crate::targets::{is_mlp, linear_dims, selected};
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use whetstone_formats::ModelConfig;

mod adapter;
mod dora;
mod full;
mod ia3;
mod lora;
mod lora_explicit;
mod prefix;
mod prompt;

pub use adapter::AdapterConfig;
pub use full::{BitfitConfig, FreezeConfig};
pub use ia3::Ia3Config;
pub use lora::{LoraConfig, LoraPlusConfig};
pub use prefix::PrefixConfig;
pub use prompt::PromptConfig;

/// Declares [`MethodKind`] (the key, with its serialised name) and maps each kind to its
/// implementation: one line per method, in the comparison table's order.
macro_rules! registry {
    ($( $(#[$doc:meta])* $kind:ident = $name:literal => $imp:expr, )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ts_rs::TS)]
        #[serde(rename_all = "snake_case")]
        #[ts(export)]
        pub enum MethodKind {
            $( $(#[$doc])* $kind, )*
        }

        impl MethodKind {
            /// Every method, in the comparison table's order.
            pub const ALL: [MethodKind; [$(stringify!($kind)),*].len()] = [$(MethodKind::$kind),*];

            /// The name settings, the CLI and saved configs use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(MethodKind::$kind => $name,)*
                }
            }

            /// Everything the rest of the code asks about this method.
            pub fn spec(self) -> &'static dyn Method {
                match self {
                    $(MethodKind::$kind => &$imp,)*
                }
            }
        }
    };
}

registry! {
    Full = "full" => full::Full,
    Freeze = "freeze" => full::Freeze,
    Lora = "lora" => lora::Lora,
    /// LoRA over a frozen base stored as NF4 (4-bit NormalFloat, double-quantized maxima).
    Qlora = "qlora" => lora::Qlora,
    /// Weight-decomposed LoRA: LoRA's direction with a learned per-output magnitude.
    Dora = "dora" => dora::Dora,
    /// LoRA with a higher learning rate for B (`lora_plus.lr_ratio` × A's).
    LoraPlus = "lora_plus" => lora::LoraPlus,
    /// (IA)3: learned scaling vectors on k, v and the FFN.
    Ia3 = "ia3" => ia3::Ia3,
    /// Only the bias terms train.
    Bitfit = "bitfit" => full::Bitfit,
    /// Trainable virtual-token embeddings in front of every input.
    PromptTuning = "prompt_tuning" => prompt::PromptTuning,
    /// Per-layer key/value prefixes, produced by a 2-layer MLP while training.
    PrefixTuning = "prefix_tuning" => prefix::PrefixTuning,
    /// P-Tuning v2: the same deep prefixes, trained directly (no MLP).
    PTuningV2 = "p_tuning_v2" => prefix::PTuningV2,
    /// Houlsby adapters: bottleneck MLPs after the attention and the FFN of every layer.
    Adapter = "adapter" => adapter::Adapter,
}

impl MethodKind {
    /// A method by name; the spellings people also write (`lora+`, `(ia)3`, `prefix`,
    /// `p-tuning-v2`) are accepted.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
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

    /// The learning rate the method starts from.
    pub fn default_lr(self) -> f64 {
        self.spec().facts().default_lr
    }

    pub fn default_weight_decay(self) -> f64 {
        self.spec().facts().default_weight_decay
    }
}

/// One section of method settings (`[lora]`, `[ia3]`, ...): its keys, and reading and
/// writing them by their dotted names.
pub trait Section {
    /// The section's keys, each with its group, kind and help text.
    const KEYS: &'static [KeyInfo];
    /// Apply `key` (the dotted name); `None` when the key is not this section's.
    fn set(&mut self, key: &str, v: &str) -> Option<Checked<()>>;
    /// The value of `key` as `set` takes it back; `None` when the key is not this section's.
    fn get(&self, key: &str) -> Option<String>;
}

/// Declares [`MethodSections`]: every method's settings section, one line each, flattened
/// into the run configuration (so `lora.r` is `{"lora": {"r": ...}}` in a saved config).
macro_rules! sections {
    ($( $field:ident: $ty:ty, )*) => {
        /// The settings of every method, one section each.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ts_rs::TS)]
        #[serde(default)]
        #[ts(export)]
        pub struct MethodSections {
            $( pub $field: $ty, )*
        }

        impl MethodSections {
            /// Every key of every section, in declaration order.
            pub fn keys() -> impl Iterator<Item = &'static KeyInfo> {
                [$(<$ty as Section>::KEYS),*].into_iter().flatten()
            }

            /// Apply a dotted key; `None` when no section has it.
            pub fn set(&mut self, key: &str, v: &str) -> Option<Checked<()>> {
                match key.split_once('.')?.0 {
                    $(stringify!($field) => self.$field.set(key, v),)*
                    _ => None,
                }
            }

            /// A dotted key's value; `None` when no section has it.
            pub fn get(&self, key: &str) -> Option<String> {
                match key.split_once('.')?.0 {
                    $(stringify!($field) => self.$field.get(key),)*
                    _ => None,
                }
            }
        }
    };
}

sections! {
    lora: LoraConfig,
    lora_plus: LoraPlusConfig,
    ia3: Ia3Config,
    prompt: PromptConfig,
    prefix: PrefixConfig,
    adapter: AdapterConfig,
    freeze: FreezeConfig,
    bitfit: BitfitConfig,
}

/// A phrase of the comparison table: the stable key the window translates it by
/// (`wizard.phrase.<key>`), and its English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phrase {
    pub key: &'static str,
    pub en: &'static str,
}

/// The table's phrases that several methods share.
pub mod phrase {
    use super::Phrase;

    pub const fn p(key: &'static str, en: &'static str) -> Phrase {
        Phrase { key, en }
    }

    pub const NO: Phrase = p("no", "no");
    pub const NO_MERGEABLE: Phrase = p("noMergeable", "no (mergeable)");
    pub const INPUT_ONLY: Phrase = p("inputOnly", "input only");
    pub const ATTENTION_ONLY: Phrase = p("attentionOnly", "attention only");
    pub const YES_SERIAL: Phrase = p("yesSerial", "yes (serial layers)");
    pub const NONE: Phrase = p("none", "none");
    pub const NONE_AFTER_MERGE: Phrase = p("noneAfterMerge", "none after merge");
    pub const EXTRA_TOKENS: Phrase = p("extraTokens", "a few extra tokens");
    pub const EXTRA_KV: Phrase = p("extraKv", "a few extra KV");
    pub const SMALL_ADDED: Phrase = p("smallAdded", "small added");
    pub const VERY_LOW: Phrase = p("veryLow", "very low");
    pub const LOW: Phrase = p("low", "low");
    pub const LOW_MEDIUM: Phrase = p("lowMedium", "low-medium");
    pub const MEDIUM: Phrase = p("medium", "medium");
    pub const HIGH: Phrase = p("high", "high");
    pub const VERY_HIGH: Phrase = p("veryHigh", "very high");
    pub const QLORA_COMPUTE: Phrase = p("qloraCompute", "very low memory, slower step");
}

/// The comparison table's descriptive columns.
#[derive(Debug, Clone, Copy)]
pub struct Description {
    pub name: &'static str,
    pub changes_architecture: Phrase,
    pub inference_latency: Phrase,
    pub compute: Phrase,
    pub use_case: Phrase,
    pub difficulty: Phrase,
}

/// Which export formats can express a run of a method.
#[derive(Debug, Clone, Copy)]
pub struct Exports {
    /// PEFT describes its checkpoint (an `adapter_config.json` PEFT loads).
    pub peft: bool,
    /// llama.cpp loads it as a GGUF LoRA adapter.
    pub gguf_adapter: bool,
    /// It folds into the base weights; else why not.
    pub merge: std::result::Result<(), &'static str>,
}

/// What a method adds to a training step's memory, for the estimator (see
/// `crate::estimate` for how the parts combine).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryShape {
    /// The decoder linears are stored as NF4 (QLoRA).
    pub nf4_base: bool,
    /// Trainable tensors are base tensors trained in place (their weights are not counted
    /// twice).
    pub trains_base: bool,
    /// Token rows added to every example (prompt tuning's virtual tokens).
    pub extra_rows: usize,
    /// Key positions added to attention (virtual tokens, prefixes).
    pub extra_keys: usize,
    /// Layers that build a graph (`None`: all; Freeze: only the trained ones).
    pub tracked_layers: Option<usize>,
    /// Floats kept per token row and layer by low-rank matrices (scaled by `LORA_SLACK`).
    pub low_rank_floats: usize,
    /// Other floats kept per token row and layer (scaled by `LAYER_SLACK`).
    pub extra_floats: usize,
    /// On the explicit training path (f32 on the CPU): the floats the method's adapters save
    /// per token row and layer (LoRA: `x·Aᵀ`, `r` per target); `None` where the method
    /// trains through autograd.
    pub explicit_floats: Option<usize>,
}

/// What `apply` needs from the run configuration.
pub struct MethodArgs<'a> {
    pub kind: MethodKind,
    pub sections: &'a MethodSections,
    pub seed: u64,
    /// The run's weight decay, resolved (decayed tensors use it, norms and biases do not).
    pub weight_decay: f64,
}

/// A setting check's result: `Err` is a one-line message naming the key.
pub type Checked<T> = std::result::Result<T, String>;

/// The checkpoint weights file of methods PEFT does not describe (HF tensor names).
pub const TRAINABLE_FILE: &str = "trainable.safetensors";
/// PEFT's adapter weights file (for the methods PEFT describes).
pub const PEFT_FILE: &str = "adapter_model.safetensors";

/// What the rest of the code reads about a method without running it: one descriptor per
/// method, as PEFT registers each tuner.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// The comparison table's descriptive columns.
    pub description: Description,
    /// The settings sections this method reads (`lora`, `prompt`, ...).
    pub sections: &'static [&'static str],
    pub default_lr: f64,
    pub default_weight_decay: f64,
    /// The checkpoint's weights file: [`PEFT_FILE`] where PEFT loads the folder.
    pub checkpoint_file: &'static str,
    /// Which export formats can express a run.
    pub exports: Exports,
    /// The `peft_type` this method loads from a PEFT folder (one method of a family).
    pub peft_type: Option<&'static str>,
    /// The decoder linears are stored as NF4 from the moment they are read (QLoRA).
    pub quantizes_base: bool,
}

/// What a setting check sees: the method settings, the sequence length and the model.
pub struct Check<'a> {
    pub sections: &'a MethodSections,
    pub seq_len: usize,
    pub model: &'a ModelConfig,
}

/// A PEFT adapter folder being loaded: its path, its `adapter_config.json` path and content.
pub struct PeftFolder<'a> {
    pub dir: &'a std::path::Path,
    pub config_path: &'a std::path::Path,
    pub config: &'a Value,
}

/// Everything about one fine-tuning method: its [`Facts`], and what it does. Defaults cover
/// the methods that add nothing.
pub trait Method: Sync {
    fn facts(&self) -> Facts;
    /// Defaults this method brings to other settings when chosen (QLoRA's LoRA settings).
    fn adjust_defaults(&self, _s: &mut MethodSections) {}
    /// Check the settings against the model, before a run starts.
    fn validate(&self, _c: &Check) -> Checked<()> {
        Ok(())
    }
    /// Make the method's tensors trainable (adding what it adds) and return them.
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>>;
    /// Exactly the number of parameters `apply` makes trainable on a model of `c`.
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64;
    /// What it adds to a step's memory.
    fn memory(&self, _s: &MethodSections, _c: &ModelConfig) -> MemoryShape {
        MemoryShape::default()
    }
    /// A PEFT adapter folder whose values the trainable tensors start from.
    fn init_dir<'a>(&self, _s: &'a MethodSections) -> Option<&'a str> {
        None
    }
    /// PEFT's `adapter_config.json` for a run (`None`: PEFT does not describe the method).
    fn peft_config(&self, _s: &MethodSections, _base: &str, _model: &ModelConfig) -> Option<Value> {
        None
    }
    /// Tensors saved beside the trained ones in the form PEFT loads for inference
    /// (prefix tuning: the MLP folded into the prefixes).
    fn inference_tensors(&self, _model: &DecoderModel) -> Result<Option<HashMap<String, Tensor>>> {
        Ok(None)
    }
    /// Load a PEFT folder of [`Facts::peft_type`] into `model`; returns the method it holds.
    fn load_peft(&self, _model: &mut DecoderModel, f: &PeftFolder) -> Checked<MethodKind> {
        Err(err(
            f.config_path,
            &"this method does not load PEFT folders",
        ))
    }
}

/// The arguments `apply` gets for a config of `kind` with default settings.
fn defaults_for(kind: MethodKind) -> MethodSections {
    let mut s = MethodSections::default();
    kind.spec().adjust_defaults(&mut s);
    s
}

/// Every named tensor of the model, mutable, in a fixed order.
pub fn visit_mut(
    model: &mut DecoderModel,
    mut f: impl FnMut(&str, &mut Tensor) -> Result<()>,
) -> Result<()> {
    f("model.embed_tokens.weight", &mut model.embed_tokens)?;
    for (l, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{l}");
        f(
            &format!("{p}.input_layernorm.weight"),
            &mut layer.input_layernorm,
        )?;
        for (name, lin) in linears_mut(layer) {
            // NF4 weights are frozen storage: nothing can train or replace them
            if let BaseWeight::Dense(w) = &mut lin.weight {
                f(&format!("{p}.{name}.weight"), w)?;
            }
            if let Some(b) = &mut lin.bias {
                f(&format!("{p}.{name}.bias"), b)?;
            }
        }
        let a = &mut layer.self_attn;
        for (name, norm) in [("q_norm", &mut a.q_norm), ("k_norm", &mut a.k_norm)] {
            if let Some(w) = norm {
                f(&format!("{p}.self_attn.{name}.weight"), w)?;
            }
        }
        f(
            &format!("{p}.post_attention_layernorm.weight"),
            &mut layer.post_attention_layernorm,
        )?;
        for (name, norm) in [
            (
                "pre_feedforward_layernorm",
                &mut layer.pre_feedforward_layernorm,
            ),
            (
                "post_feedforward_layernorm",
                &mut layer.post_feedforward_layernorm,
            ),
        ] {
            if let Some(w) = norm {
                f(&format!("{p}.{name}.weight"), w)?;
            }
        }
    }
    f("model.norm.weight", &mut model.norm)?;
    if let Some(h) = &mut model.lm_head {
        f("lm_head.weight", h)?;
    }
    Ok(())
}

/// The layer's linears with their HF module paths relative to the layer (Phi-3's fused
/// `qkv_proj` and `gate_up_proj` where the model has them).
pub fn linears_mut(layer: &mut crate::model::Layer) -> Vec<(&'static str, &mut Linear)> {
    let a = &mut layer.self_attn;
    let m = &mut layer.mlp;
    let mut out = vec![];
    match (&mut a.k_proj, &mut a.v_proj) {
        (Some(k), Some(v)) => {
            out.push(("self_attn.q_proj", &mut a.q_proj));
            out.push(("self_attn.k_proj", k));
            out.push(("self_attn.v_proj", v));
        }
        _ => out.push(("self_attn.qkv_proj", &mut a.q_proj)),
    }
    out.push(("self_attn.o_proj", &mut a.o_proj));
    match &mut m.up_proj {
        Some(up) => {
            out.push(("mlp.gate_proj", &mut m.gate_proj));
            out.push(("mlp.up_proj", up));
        }
        None => out.push(("mlp.gate_up_proj", &mut m.gate_proj)),
    }
    out.push(("mlp.down_proj", &mut m.down_proj));
    out
}

/// A seeded uniform stream for initialisation (xorshift64*).
pub(super) struct InitRng(pub(super) u64);

impl InitRng {
    /// N(0, 1) by Box–Muller.
    pub(super) fn normal(&mut self) -> f32 {
        let u1 = self.uniform(0.0, 1.0).max(1e-12);
        let u2 = self.uniform(0.0, 1.0);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    /// A `[rows, cols]` tensor like a fresh `nn.Linear` weight: U(±1/√fan_in).
    pub(super) fn linear(
        &mut self,
        rows: usize,
        cols: usize,
        model: &DecoderModel,
    ) -> Result<Tensor> {
        let bound = 1.0 / (cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| self.uniform(-bound, bound))
            .collect();
        Tensor::from_vec(v, (rows, cols), &model.device)?.to_dtype(model.dtype)
    }

    pub(super) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// Make `a.kind`'s tensors trainable (adding what the method adds) and return them as
/// optimizer parameters.
pub fn apply(model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
    a.kind.spec().apply(model, a)
}

/// [`apply`] with the method's default settings (loading saved adapters).
fn apply_default(
    model: &mut DecoderModel,
    kind: MethodKind,
    s: &MethodSections,
) -> Result<Vec<Param>> {
    apply(
        model,
        &MethodArgs {
            kind,
            sections: s,
            seed: 42,
            weight_decay: 0.0,
        },
    )
}

/// Store every decoder linear that is still full precision as NF4 (QLoRA's base).
pub fn quantize_linears(model: &mut DecoderModel) -> Result<()> {
    for layer in &mut model.layers {
        for (_, lin) in linears_mut(layer) {
            if let BaseWeight::Dense(w) = &lin.weight {
                let q = crate::quant::Nf4Tensor::quantize(w)?;
                lin.weight = BaseWeight::Nf4(std::sync::Arc::new(q));
            }
        }
    }
    Ok(())
}

/// How many parameters the model has in total (frozen and trainable, LoRA included).
pub fn count_params(model: &DecoderModel) -> usize {
    let mut n = model.embed_tokens.elem_count() + model.norm.elem_count();
    n += model.prompt.as_ref().map_or(0, |p| p.elem_count());
    if let Some(p) = &model.prefix {
        n += p.embedding.elem_count();
        if let Some((a, b)) = &p.mlp {
            for lin in [a, b] {
                n += lin.weight.elem_count() + lin.bias.as_ref().map_or(0, |b| b.elem_count());
            }
        }
    }
    if let Some(h) = &model.lm_head {
        n += h.elem_count();
    }
    for layer in &model.layers {
        n += layer.input_layernorm.elem_count() + layer.post_attention_layernorm.elem_count();
        for norm in [
            &layer.self_attn.q_norm,
            &layer.self_attn.k_norm,
            &layer.pre_feedforward_layernorm,
            &layer.post_feedforward_layernorm,
        ] {
            n += norm.as_ref().map_or(0, |w| w.elem_count());
        }
        let mut layer = layer.clone();
        for (_, lin) in linears_mut(&mut layer) {
            n += lin.weight.elem_count() + lin.bias.as_ref().map_or(0, |b| b.elem_count());
            n += lin.adapter.as_ref().map_or(0, |a| a.param_count());
        }
        if let Some((a, f)) = &layer.adapters {
            for b in [a, f] {
                for lin in [&b.down, &b.up] {
                    n += lin.weight.elem_count() + lin.bias.as_ref().map_or(0, |b| b.elem_count());
                }
            }
        }
    }
    n
}

/// `path: message`, the form every adapter-loading error takes.
pub(super) fn err(path: &std::path::Path, e: &dyn std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// The tensors of a PEFT folder's `adapter_model.safetensors`, with the file's path for errors.
pub(super) fn adapter_tensors(
    dir: &std::path::Path,
    device: &candle_core::Device,
) -> std::result::Result<
    (
        std::path::PathBuf,
        std::collections::HashMap<String, Tensor>,
    ),
    String,
> {
    let wf = dir.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&wf, device).map_err(|e| err(&wf, &e))?;
    Ok((wf, tensors))
}

/// Apply a trained adapter or checkpoint folder to `model` for inference: a PEFT LoRA dir
/// (`adapter_config.json` + `adapter_model.safetensors`, ours or made by PEFT) or a
/// Full/Freeze checkpoint (`trainable.safetensors` with HF tensor names).
pub fn load_adapter_dir(model: &mut DecoderModel, dir: &std::path::Path) -> Checked<MethodKind> {
    let cfg_path = dir.join("adapter_config.json");
    if cfg_path.exists() {
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| err(&cfg_path, &e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(&cfg_path, &e))?;
        let peft_type = v
            .get("peft_type")
            .filter(|x| !x.is_null())
            .and_then(|t| t.as_str());
        let loaders = || {
            MethodKind::ALL
                .iter()
                .filter_map(|m| m.spec().facts().peft_type)
        };
        return match MethodKind::ALL
            .iter()
            .find(|m| peft_type.is_some() && m.spec().facts().peft_type == peft_type)
        {
            Some(m) => m.spec().load_peft(
                model,
                &PeftFolder {
                    dir,
                    config_path: &cfg_path,
                    config: &v,
                },
            ),
            None => Err(err(
                &cfg_path,
                &format!(
                    "field `peft_type`: {peft_type:?} is not supported here ({} are)",
                    loaders().collect::<Vec<_>>().join(", ")
                ),
            )),
        };
    }
    let wf = dir.join("trainable.safetensors");
    if !wf.exists() {
        return Err(format!(
            "{}: not an adapter folder (no adapter_config.json or trainable.safetensors)",
            dir.display()
        ));
    }
    let mut tensors =
        candle_core::safetensors::load(&wf, &model.device).map_err(|e| err(&wf, &e))?;
    if let Some(down) = tensors.get("model.layers.0.adapter_attn.down.weight") {
        // Houlsby adapters: rebuild them at the saved width, then load
        let mut s = defaults_for(MethodKind::Adapter);
        s.adapter.bottleneck = Some(down.dim(0).map_err(|e| err(&wf, &e))?);
        let params = apply_default(model, MethodKind::Adapter, &s).map_err(|e| err(dir, &e))?;
        load_params(&params, &tensors).map_err(|e| err(&wf, &e))?;
        for p in &params {
            tensors.remove(&p.name);
        }
        if tensors.is_empty() {
            return Ok(MethodKind::Adapter);
        }
    }
    let mut used = 0;
    let dtype = model.dtype;
    // BitFit with `add_biases`: the biases it trained exist only in the checkpoint
    let device = model.device.clone();
    for (l, layer) in model.layers.iter_mut().enumerate() {
        for (name, lin) in linears_mut(layer) {
            if lin.bias.is_none() && tensors.contains_key(&format!("model.layers.{l}.{name}.bias"))
            {
                let out = lin.weight.dims2().map_err(|e| err(&wf, &e))?.0;
                lin.bias = Some(Tensor::zeros(out, dtype, &device).map_err(|e| err(&wf, &e))?);
            }
        }
    }
    visit_mut(model, |name, t| {
        if let Some(new) = tensors.get(name) {
            if new.dims() != t.dims() {
                candle_core::bail!(
                    "`{name}` has shape {:?}, the model needs {:?}",
                    new.dims(),
                    t.dims()
                );
            }
            *t = new.to_dtype(dtype)?;
            used += 1;
        }
        Ok(())
    })
    .map_err(|e| err(&wf, &e))?;
    if used != tensors.len() {
        return Err(err(
            &wf,
            &format!(
                "{} of its tensors are not in this model",
                tensors.len() - used
            ),
        ));
    }
    Ok(MethodKind::Full)
}

/// PEFT's `target_modules`: a list of (possibly dotted) module names, or `all-linear`.
pub(super) fn peft_targets(
    v: Option<&serde_json::Value>,
    path: &std::path::Path,
) -> std::result::Result<Vec<String>, String> {
    let targets: Vec<String> = match v {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| {
                x.as_str()
                    .map(|s| s.rsplit('.').next().unwrap_or(s).to_string())
            })
            .collect(),
        Some(serde_json::Value::String(s)) if s == "all-linear" => {
            crate::targets::LORA_TARGETS.map(String::from).to_vec()
        }
        _ => {
            return Err(format!(
                "{}: field `target_modules`: missing or not a list",
                path.display()
            ))
        }
    };
    if let Some(bad) = targets
        .iter()
        .find(|t| !crate::targets::LORA_TARGETS.contains(&t.as_str()))
    {
        return Err(format!(
            "{}: field `target_modules`: `{bad}` is not a linear module of this model",
            path.display()
        ));
    }
    Ok(targets)
}
