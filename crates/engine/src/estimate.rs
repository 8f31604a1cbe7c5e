//! What a run will hold in memory, before it starts (`whetstone estimate`, the method table).
//!
//! Peak memory of a training step, in bytes:
//!
//! ```text
//! peak = runtime + weights + trainable · (param + grad + accumulated grad + 2 AdamW moments)
//!      + activations kept for the backward pass + the step's largest transient
//! ```
//!
//! The compute dtype (`e` = 4 bytes for f32, 2 for bf16) sizes weights and activations.
//!
//! * **weights**: every base tensor at `e` bytes, except QLoRA's decoder linears at the NF4
//!   size (4 bits + one byte per 64 + four bytes per 16384 values).
//! * **trainable**: the exact parameter count of [`trainable_params`] (checked against what
//!   `methods::apply` creates) times 20 bytes: in f32 the parameter, its gradient, the
//!   accumulated gradient and two moments; in bf16 the parameter and its gradient at 2 bytes
//!   and an f32 master, accumulated gradient and moments. Full and Freeze train base
//!   tensors in place, so their weights are not counted twice.
//! * **activations**, on the explicit training path (f32 on the CPU, the plain decoder, the
//!   methods that take it): per layer and token row what it saves — the layer input, both
//!   norm outputs and the residual sum (4·h), q, k, v and the attention output (2·q + 2·kv),
//!   one log-sum-exp per head, the MLP's gate and up (2·i), two reciprocal norms, and what the
//!   adapters save (`MemoryShape::explicit_floats`: LoRA's `x·Aᵀ`); every layer saves, even
//!   frozen ones. Transient: one 256-row block of logits and one layer's buffers.
//! * **activations**, on the autograd path: per decoder layer and token row, the tensors this
//!   implementation keeps for the backward pass — norm outputs and residual sums (4·h), q/k/v projections, their
//!   rotated and head-repeated copies and the attention output (6·q + 4·kv), scores and
//!   probabilities (2·heads·keys), the MLP's gate, up, SiLU and product (4·i) and down (h),
//!   plus what each method adds (LoRA's dropout mask, dropped input, low-rank and scaled
//!   outputs; the scaled activations of (IA)3; the adapters' bottlenecks). Rows are assumed
//!   full (`seq_len` tokens, as with packing); padded batches of shorter examples use less.
//!   With gradient checkpointing only each layer's input is kept, plus one layer being
//!   recomputed. Layers below the first trainable tensor keep nothing (Freeze).
//! * **transient**: the logits of the trained rows (vocab floats each; half the rows with
//!   assistant-only masks, all with `train_on_prompt`; in bf16 also their f32 copy for the
//!   loss) and one layer's gradients in flight.
//! * **slack**: the counted layer tensors are scaled by factors measured on this
//!   implementation (`LAYER_SLACK`, `LORA_SLACK`).
//! * **runtime**: the process itself (code, tokenizer, data, allocator pools), a measured
//!   constant.
//!
//! `bench/estimate_check.py` compares these numbers with measured peaks.

use crate::config::{MethodKind, TrainConfig};
use crate::methods::MemoryShape;
pub use crate::targets::base_params;
use crate::targets::linear_dims;
use candle_core::DType;
use serde::Serialize;
use whetstone_formats::ModelConfig;

/// Bytes the process holds besides model, optimizer and activations (measured on Linux:
/// binary, tokenizer, dataset, SQLite and the allocator's pools).
pub const RUNTIME_BYTES: u64 = 180 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct Estimate {
    pub method: MethodKind,
    /// What the run computes in (`f32` or `bf16`), `dtype=auto` resolved for the device.
    pub compute_dtype: String,
    #[ts(type = "number")]
    pub trainable_params: u64,
    /// Parameters of the base model (what `trainable_percent` is relative to).
    #[ts(type = "number")]
    pub base_params: u64,
    pub trainable_percent: f64,
    #[ts(type = "number")]
    pub weight_bytes: u64,
    /// Trainable parameters with their gradients, accumulated gradients and AdamW moments.
    #[ts(type = "number")]
    pub optimizer_bytes: u64,
    #[ts(type = "number")]
    pub activation_bytes: u64,
    #[ts(type = "number")]
    pub runtime_bytes: u64,
    #[ts(type = "number")]
    pub total_bytes: u64,
}

/// Exactly the number of parameters `cfg`'s method trains on this model.
pub fn trainable_params(c: &ModelConfig, cfg: &TrainConfig) -> u64 {
    cfg.method.spec().trainable_params(&cfg.methods, c)
}

/// Measured on this implementation (bench/estimate_check.py, SmolLM2-135M on the CPU): what
/// a layer really holds over the tensors counted below — gradients in flight, candle's
/// graph bookkeeping and allocator slack. LoRA's small per-module tensors carry the most
/// (the low-rank matmuls' backward materialises transposed copies).
const LAYER_SLACK: f64 = 1.3;
const LORA_SLACK: f64 = 2.0;

/// Floats kept per token row in one layer for the backward pass, for a key length of
/// `keys` (the sequence, plus virtual tokens), with the measured slack applied.
fn layer_floats_per_row(c: &ModelConfig, m: &MemoryShape, keys: usize) -> f64 {
    let (h, q, kv, i) = (
        c.hidden_size,
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
        c.intermediate_size,
    );
    let repeated = if c.num_kv_heads < c.num_heads {
        2 * q
    } else {
        0
    };
    let base = 4 * h + (4 * q + 4 * kv + repeated) + 2 * c.num_heads * keys + q + h + 4 * i + h;
    LAYER_SLACK * (base + m.extra_floats) as f64 + LORA_SLACK * m.low_rank_floats as f64
}

/// Floats the explicit training path saves per token row in one layer (no slack: its buffers
/// are exactly these sizes).
fn explicit_floats_per_row(c: &ModelConfig, adapters: usize) -> usize {
    let (h, q, kv, i) = (
        c.hidden_size,
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
        c.intermediate_size,
    );
    4 * h + 2 * q + 2 * kv + c.num_heads + 2 * i + 2 + adapters
}

/// What `layers` layers keep for the backward pass: `per_layer` bytes each, or with gradient
/// checkpointing only each layer's input (`input` bytes) plus one layer being recomputed.
fn kept(layers: u64, per_layer: u64, input: u64, checkpointing: bool) -> u64 {
    if checkpointing {
        layers * input + per_layer
    } else {
        layers * per_layer
    }
}

/// Rows of logits the fused output projection + cross-entropy holds at once.
const LOGIT_BLOCK_ROWS: usize = 256;

/// Activation bytes on the autograd path: every tracked layer's graph, the trained rows'
/// logits and one layer's gradients in flight.
fn autograd_activations(
    c: &ModelConfig,
    cfg: &TrainConfig,
    shape: &MemoryShape,
    dtype: DType,
    rows: u64,
) -> u64 {
    let e = dtype.size_in_bytes() as u64;
    let t = cfg.seq_len;
    let per_layer =
        (e as f64 * rows as f64 * layer_floats_per_row(c, shape, t + shape.extra_keys)) as u64;
    // layers below the first trainable tensor build no graph (Freeze trains only the last few)
    let tracked = shape
        .tracked_layers
        .map_or(c.num_layers as u64, |n| n as u64);
    let input = e * rows * c.hidden_size as u64;
    let kept = kept(tracked, per_layer, input, cfg.gradient_checkpointing);
    // logits of the trained rows (assistant-only masks: about half the tokens) and one
    // layer's gradients in flight
    let targets = if cfg.train_on_prompt { 1.0 } else { 0.5 };
    let logit_bytes = if dtype == DType::F32 {
        4.0
    } else {
        4.0 + e as f64
    };
    let logits = logit_bytes * targets * (cfg.batch_size * t * c.vocab_size) as f64;
    kept + logits as u64 + per_layer
}

/// Estimate a training run of `cfg` on a model of `c`, on a device that does (`native_bf16`)
/// or does not compute in bf16 natively (what `dtype=auto` picks), the CPU (`cpu`) or not.
pub fn estimate(c: &ModelConfig, cfg: &TrainConfig, native_bf16: bool, cpu: bool) -> Estimate {
    let dtype = cfg.compute_dtype(native_bf16);
    let e = dtype.size_in_bytes() as u64;
    let trainable = trainable_params(c, cfg);
    let base = base_params(c);
    let layers = c.num_layers as u64;
    let linear_params: u64 = layers
        * linear_dims(c)
            .iter()
            .map(|&(_, i, o)| (i * o) as u64)
            .sum::<u64>();
    let shape = cfg.method.spec().memory(&cfg.methods, c);
    let weight_bytes = if shape.nf4_base {
        let nf4 = linear_params / 2 + linear_params / 64 + 4 * linear_params / (64 * 256);
        e * (base - linear_params) + nf4
    } else {
        e * base
    };
    // Full/Freeze train base tensors in place: only gradients (and masters) come on top
    let per_param = if shape.trains_base { 20 - e } else { 20 };
    let optimizer_bytes = per_param * trainable;
    let t = cfg.seq_len;
    // a preference row is two sequences (the pair, or KTO's KL sequence); ORPO over whole
    // rows takes the autograd path
    let pref = cfg.objective.is_preference();
    let whole_rows = cfg.objective == crate::config::ObjectiveKind::Orpo && cfg.train_on_prompt;
    let cfg = &TrainConfig {
        batch_size: cfg.batch_size * if pref { 2 } else { 1 },
        ..cfg.clone()
    };
    let rows = (cfg.batch_size * (t + shape.extra_rows)) as u64;
    let explicit = shape.explicit_floats.filter(|_| {
        cpu && !whole_rows && dtype == DType::F32 && crate::model::beyond_plain_decoder(c).is_none()
    });
    let activation_bytes = match explicit {
        Some(adapters) => {
            let per_layer = e * rows * explicit_floats_per_row(c, adapters) as u64;
            let input = e * rows * c.hidden_size as u64;
            let block = rows.min(LOGIT_BLOCK_ROWS as u64);
            kept(layers, per_layer, input, cfg.gradient_checkpointing)
                + e * block * c.vocab_size as u64
                + per_layer
        }
        None => autograd_activations(c, cfg, &shape, dtype, rows),
    };
    let total_bytes = RUNTIME_BYTES + weight_bytes + optimizer_bytes + activation_bytes;
    Estimate {
        method: cfg.method,
        compute_dtype: if dtype == DType::F32 { "f32" } else { "bf16" }.into(),
        trainable_params: trainable,
        base_params: base,
        trainable_percent: 100.0 * trainable as f64 / base as f64,
        weight_bytes,
        optimizer_bytes,
        activation_bytes,
        runtime_bytes: RUNTIME_BYTES,
        total_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LORA_TARGETS;
    use crate::methods;
    use crate::train::tests::tiny_model;
    use candle_core::DType;

    #[test]
    fn linear_names_match_the_lora_targets() {
        let c = tiny_model(DType::F32, 1).config;
        let names: Vec<&str> = linear_dims(&c).iter().map(|x| x.0).collect();
        assert_eq!(names, crate::config::model_linears(&c));
        assert!(names.iter().all(|n| LORA_TARGETS.contains(n)));
        // the fused layout (Phi-3) names its two fused modules
        let fused = whetstone_formats::ModelConfig {
            fused_projections: true,
            ..c
        };
        let names: Vec<&str> = linear_dims(&fused).iter().map(|x| x.0).collect();
        assert_eq!(names, crate::config::model_linears(&fused));
        assert_eq!(names, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]);
    }

    #[test]
    fn trainable_counts_equal_what_the_methods_create() {
        for method in MethodKind::ALL {
            for variant in 0..2 {
                let mut model = tiny_model(DType::F32, 2);
                let mut cfg = TrainConfig::for_method(method);
                if variant == 1 {
                    cfg.methods.lora.r = 3;
                    cfg.methods.lora.targets = vec!["k_proj".into(), "down_proj".into()];
                    cfg.methods.ia3.targets = vec!["q_proj".into(), "up_proj".into()];
                    cfg.methods.prompt.n_virtual_tokens = 7;
                    cfg.methods.prefix.encoder_hidden = 10;
                    cfg.methods.adapter.bottleneck = Some(5);
                    cfg.methods.freeze.trainable_layers = 1;
                    cfg.methods.freeze.train_norm = false;
                    cfg.methods.bitfit.add_biases = true;
                }
                let params = methods::apply(&mut model, &cfg.method_args()).unwrap();
                let made: usize = params.iter().map(|p| p.var.elem_count()).sum();
                assert_eq!(
                    trainable_params(&model.config, &cfg),
                    made as u64,
                    "{method:?} variant {variant}"
                );
            }
        }
        let model = tiny_model(DType::F32, 2);
        assert_eq!(
            base_params(&model.config),
            methods::count_params(&model) as u64
        );
    }

    #[test]
    fn the_explicit_path_is_estimated_where_it_runs() {
        let c = tiny_model(DType::F32, 1).config;
        let cfg = TrainConfig::for_method(MethodKind::Lora);
        let (cpu, other) = (
            estimate(&c, &cfg, false, true),
            estimate(&c, &cfg, false, false),
        );
        assert!(cpu.activation_bytes < other.activation_bytes);
        assert_eq!(cpu.weight_bytes, other.weight_bytes);
        // a model or a method the explicit path does not take is estimated as autograd
        let gemma = whetstone_formats::ModelConfig {
            sandwich_norms: true,
            ..c.clone()
        };
        assert_eq!(
            estimate(&gemma, &cfg, false, true),
            estimate(&gemma, &cfg, false, false)
        );
        let ia3 = TrainConfig::for_method(MethodKind::Ia3);
        assert_eq!(
            estimate(&c, &ia3, false, true),
            estimate(&c, &ia3, false, false)
        );
    }

    #[test]
    fn bf16_halves_weights_and_activations_and_auto_follows_the_device() {
        let c = tiny_model(DType::F32, 1).config;
        let mut cfg = TrainConfig::for_method(MethodKind::Lora);
        assert_eq!(cfg.dtype, "auto");
        let cpu = estimate(&c, &cfg, false, false);
        let gpu = estimate(&c, &cfg, true, false);
        assert_eq!(
            (cpu.compute_dtype.as_str(), gpu.compute_dtype.as_str()),
            ("f32", "bf16")
        );
        assert_eq!(cpu.weight_bytes, 2 * gpu.weight_bytes);
        assert_eq!(cpu.optimizer_bytes, gpu.optimizer_bytes);
        assert!(gpu.activation_bytes < cpu.activation_bytes);
        cfg.set("dtype", "bf16").unwrap();
        assert_eq!(estimate(&c, &cfg, false, false), gpu);
        cfg.set("dtype", "f32").unwrap();
        assert_eq!(estimate(&c, &cfg, true, false), cpu);
        let e = cfg.set("dtype", "f16").unwrap_err();
        assert!(
            e.contains("auto, f32, bf16") && e.contains("loss scaling"),
            "{e}"
        );
    }
}
