//! A short list of small instruction models that fine-tune on consumer hardware, with what
//! each costs: parameters, download size, and the memory LoRA and QLoRA would need (from the
//! same estimator as `whetstone estimate`, one sequence of 512 tokens per step with gradient
//! checkpointing, each method's default targets), and whether that fits the chosen device.
//!
//! The architectures are written out here so the list works offline; `models add hf:<id>`
//! checks them against the real `config.json` when the model is downloaded.

use crate::methods::{estimate_on, usable_bytes};
use serde::Serialize;
use whetstone_engine::estimate::base_params;
use whetstone_engine::{DeviceInfo, MethodKind, TrainConfig};
use whetstone_formats::{Family, ModelConfig, RopeScaling};

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct CuratedModel {
    /// `hf:owner/name`, what `models add` takes.
    pub reference: String,
    pub name: &'static str,
    pub family: &'static str,
    #[ts(type = "number")]
    pub parameters: u64,
    /// The bf16 safetensors download.
    #[ts(type = "number")]
    pub download_bytes: u64,
    pub license: &'static str,
    pub gated: bool,
    pub note: &'static str,
    #[ts(type = "number")]
    pub lora_bytes: u64,
    #[ts(type = "number")]
    pub qlora_bytes: u64,
    pub lora_fits: bool,
    pub qlora_fits: bool,
}

struct Entry {
    id: &'static str,
    name: &'static str,
    license: &'static str,
    gated: bool,
    note: &'static str,
    family: Family,
    /// vocab, hidden, intermediate, layers, heads, kv heads, head dim, tied embeddings
    shape: (usize, usize, usize, usize, usize, usize, usize, bool),
}

const ENTRIES: &[Entry] = &[
    Entry {
        id: "HuggingFaceTB/SmolLM2-135M-Instruct",
        name: "SmolLM2 135M Instruct",
        license: "apache-2.0",
        gated: false,
        note: "the demo model: minutes per run on a CPU",
        family: Family::Llama,
        shape: (49152, 576, 1536, 30, 9, 3, 64, true),
    },
    Entry {
        id: "HuggingFaceTB/SmolLM2-360M-Instruct",
        name: "SmolLM2 360M Instruct",
        license: "apache-2.0",
        gated: false,
        note: "small and quick; fine on a CPU",
        family: Family::Llama,
        shape: (49152, 960, 2560, 32, 15, 5, 64, true),
    },
    Entry {
        id: "Qwen/Qwen2.5-0.5B-Instruct",
        name: "Qwen2.5 0.5B Instruct",
        license: "apache-2.0",
        gated: false,
        note: "multilingual, large vocabulary",
        family: Family::Qwen2,
        shape: (151936, 896, 4864, 24, 14, 2, 64, true),
    },
    Entry {
        id: "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        name: "TinyLlama 1.1B Chat",
        license: "apache-2.0",
        gated: false,
        note: "Llama 2 layout, SentencePiece tokenizer",
        family: Family::Llama,
        shape: (32000, 2048, 5632, 22, 32, 4, 64, false),
    },
    Entry {
        id: "meta-llama/Llama-3.2-1B-Instruct",
        name: "Llama 3.2 1B Instruct",
        license: "llama3.2",
        gated: true,
        note: "gated: accept Meta's licence on the hub, then `whetstone hub login`",
        family: Family::Llama,
        shape: (128256, 2048, 8192, 16, 32, 8, 64, true),
    },
    Entry {
        id: "Qwen/Qwen2.5-1.5B-Instruct",
        name: "Qwen2.5 1.5B Instruct",
        license: "apache-2.0",
        gated: false,
        note: "strongest of the list; QLoRA on 6-8 GB GPUs",
        family: Family::Qwen2,
        shape: (151936, 1536, 8960, 28, 12, 2, 128, true),
    },
    Entry {
        id: "Qwen/Qwen3-0.6B",
        name: "Qwen3 0.6B",
        license: "apache-2.0",
        gated: false,
        note: "thinks before it answers; per-head q/k norms",
        family: Family::Qwen3,
        shape: (151936, 1024, 3072, 28, 16, 8, 128, true),
    },
    Entry {
        id: "google/gemma-3-270m-it",
        name: "Gemma 3 270M Instruct",
        license: "gemma",
        gated: true,
        note: "gated: accept Google's terms on the hub; a 262k vocabulary in a tiny model",
        family: Family::Gemma3,
        shape: (262144, 640, 2048, 18, 4, 1, 256, true),
    },
    Entry {
        id: "google/gemma-3-1b-it",
        name: "Gemma 3 1B Instruct",
        license: "gemma",
        gated: true,
        note: "gated: accept Google's terms on the hub; sliding-window layers",
        family: Family::Gemma3,
        shape: (262144, 1152, 6912, 26, 4, 1, 256, true),
    },
    Entry {
        id: "HuggingFaceTB/SmolLM3-3B",
        name: "SmolLM3 3B",
        license: "apache-2.0",
        gated: false,
        note: "every fourth layer without rope; QLoRA on 8 GB GPUs",
        family: Family::SmolLM3,
        shape: (128256, 2048, 11008, 36, 16, 4, 128, true),
    },
    Entry {
        id: "microsoft/Phi-4-mini-instruct",
        name: "Phi-4 mini Instruct",
        license: "mit",
        gated: false,
        note: "fused qkv / gate_up (LoRA targets qkv_proj, gate_up_proj); 128k context",
        family: Family::Phi3,
        shape: (200064, 3072, 8192, 32, 24, 8, 128, true),
    },
    Entry {
        id: "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        name: "SmolLM2 1.7B Instruct",
        license: "apache-2.0",
        gated: false,
        note: "full multi-head attention: more activation memory",
        family: Family::Llama,
        shape: (49152, 2048, 8192, 24, 32, 32, 64, true),
    },
];

/// The shape of curated model `id` as a model config (no download needed).
pub fn model_config(id: &str) -> Option<ModelConfig> {
    ENTRIES.iter().find(|e| e.id == id).map(config)
}

fn config(e: &Entry) -> ModelConfig {
    let (vocab, hidden, inter, layers, heads, kv, head_dim, tied) = e.shape;
    let gemma = e.family.is_gemma();
    // Gemma 3: five sliding layers of 512 tokens for every full one
    let sliding_layers: Vec<bool> = match gemma {
        true => (0..layers).map(|l| (l + 1) % 6 != 0).collect(),
        false => vec![],
    };
    ModelConfig {
        family: e.family,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: (e.id.contains("Llama-3.2")).then_some(RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        }),
        max_position_embeddings: 8192,
        tie_word_embeddings: tied,
        qkv_bias: e.family == Family::Qwen2,
        o_bias: false,
        mlp_bias: false,
        qk_norm: matches!(e.family, Family::Qwen3 | Family::Gemma3),
        rope_layers: match e.family {
            Family::SmolLM3 => (0..layers).map(|l| (l + 1) % 4 != 0).collect(),
            _ => vec![],
        },
        sliding_window: gemma.then_some(512),
        sliding_layers,
        dropouts: vec![],
        activation: if gemma {
            whetstone_formats::Activation::GeluTanh
        } else {
            whetstone_formats::Activation::Silu
        },
        unit_offset_norms: gemma,
        scale_embeddings: gemma,
        sandwich_norms: gemma,
        query_pre_attn_scalar: gemma.then_some(head_dim as f64),
        attn_softcap: None,
        final_softcap: None,
        local_rope_theta: gemma.then_some(10_000.0),
        // Phi-4-mini rotates three quarters of each head
        rotary_dim: if e.family == Family::Phi3 {
            head_dim * 3 / 4
        } else {
            head_dim
        },
        fused_projections: e.family == Family::Phi3,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// The list, smallest first, with memory needs for `device`.
pub fn curated(device: &DeviceInfo) -> Vec<CuratedModel> {
    let usable = usable_bytes(device);
    let fits = |b: u64| usable.is_none_or(|u| b <= u);
    let mut out: Vec<CuratedModel> = ENTRIES
        .iter()
        .map(|e| {
            let c = config(e);
            let run = |m: MethodKind| {
                let mut t = TrainConfig::for_method(m);
                t.batch_size = 1;
                t.seq_len = 512;
                t.gradient_checkpointing = true;
                estimate_on(&c, &t, device).total_bytes
            };
            let (lora, qlora) = (run(MethodKind::Lora), run(MethodKind::Qlora));
            let parameters = base_params(&c);
            CuratedModel {
                reference: format!("hf:{}", e.id),
                name: e.name,
                family: e.family.as_str(),
                parameters,
                download_bytes: 2 * parameters,
                license: e.license,
                gated: e.gated,
                note: e.note,
                lora_bytes: lora,
                qlora_bytes: qlora,
                lora_fits: fits(lora),
                qlora_fits: fits(qlora),
            }
        })
        .collect();
    out.sort_by_key(|m| m.parameters);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_counts_parameters_like_the_model_cards() {
        let cpu = whetstone_engine::detect_devices().remove(0);
        let list = curated(&cpu);
        let params = |id: &str| {
            list.iter()
                .find(|m| m.reference.ends_with(id))
                .unwrap()
                .parameters
        };
        // the published sizes, to the million
        assert_eq!(params("SmolLM2-135M-Instruct") / 1_000_000, 134);
        assert_eq!(params("SmolLM2-360M-Instruct") / 1_000_000, 361);
        assert_eq!(params("Qwen2.5-0.5B-Instruct") / 1_000_000, 494);
        assert_eq!(params("TinyLlama-1.1B-Chat-v1.0") / 1_000_000, 1100);
        assert_eq!(params("Llama-3.2-1B-Instruct") / 1_000_000, 1235);
        assert_eq!(params("Qwen3-0.6B") / 1_000_000, 596);
        assert_eq!(params("gemma-3-270m-it"), 268_098_176);
        assert_eq!(params("gemma-3-1b-it"), 999_885_952);
        assert_eq!(params("SmolLM3-3B") / 1_000_000, 3075);
        assert_eq!(params("Phi-4-mini-instruct") / 1_000_000, 3836);
        assert!(list.windows(2).all(|w| w[0].parameters <= w[1].parameters));
        // one sequence with checkpointing: the 4-bit base is what counts
        assert!(list.iter().all(|m| m.qlora_bytes < m.lora_bytes));
    }
}
