//! Writing GGUF files llama.cpp (and so Ollama) loads: LoRA adapters and merged models.
//!
//! Facts this module keeps (docs/formats.md#gguf-lora-adapter): an adapter says `general.type = "adapter"`,
//! `adapter.type = "lora"` and `adapter.lora.alpha` as a float32; its tensors are the base
//! tensor's name plus `.lora_a` (`[r, in]` in PyTorch order) and `.lora_b` (`[out, r]`);
//! llama.cpp scales by `alpha / r` only, so rsLoRA's `alpha / √r` is written as
//! `alpha·√r`. For the `llama` architecture the converter interleaves the rotary halves of
//! the Q and K rows, so `lora_b` of `q_proj`/`k_proj` (and merged Q/K weights) get the same
//! row permutation; Qwen2 (NeoX rope) needs none.

use crate::config::{Family, ModelConfig};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::Path;

pub use gguf_file::Value as GgufValue;

pub use crate::config::{gguf_architecture, permutes_qk};
pub use crate::weights::gguf_name;

/// Refuse a model whose computation llama.cpp's architecture for it would not reproduce, so
/// a GGUF export never silently changes the function: sliding-window layers (the `llama`,
/// `qwen2`, `qwen3` and `phi3` graphs attend to the whole context; a window as long as the
/// context changes nothing) and layers without rope other than `smollm3`'s fixed
/// every-fourth pattern.
pub fn check_llama_cpp_math(cfg: &ModelConfig) -> Result<(), String> {
    let arch = gguf_architecture(cfg.family);
    if cfg.family.is_gemma() {
        return check_gemma(cfg, arch);
    }
    if let Some(w) = cfg
        .sliding_window
        .filter(|&w| w < cfg.max_position_embeddings && cfg.sliding_layers.iter().any(|&s| s))
    {
        return Err(format!(
            "llama.cpp's `{arch}` attends to the whole context, but this model's layers slide \
             over {w} tokens (`sliding_window`); a GGUF would compute differently beyond {w} \
             tokens"
        ));
    }
    let llama_cpp_pattern = |l: usize| cfg.family != Family::SmolLM3 || !(l + 1).is_multiple_of(4);
    if let Some(l) = (0..cfg.num_layers).find(|&l| cfg.layer_uses_rope(l) != llama_cpp_pattern(l)) {
        return Err(format!(
            "layer {l} {} rope here but not in llama.cpp's `{arch}` (`no_rope_layers`)",
            if cfg.layer_uses_rope(l) {
                "uses"
            } else {
                "skips"
            }
        ));
    }
    Ok(())
}

/// The sliding-layer period llama.cpp assumes for a Gemma architecture unless the file
/// states one (`attention.sliding_window_pattern`).
fn gemma_default_pattern(family: Family) -> usize {
    if family == Family::Gemma2 {
        2
    } else {
        6
    }
}

/// The smallest period `p` with layer `l` sliding exactly when `l % p < p - 1` (llama.cpp's
/// rule), if the model's sliding layers follow one.
fn gemma_pattern(cfg: &ModelConfig) -> Option<usize> {
    (1..=cfg.num_layers.max(1))
        .find(|&p| (0..cfg.num_layers).all(|l| (cfg.layer_window(l).is_some()) == (l % p < p - 1)))
}

/// What llama.cpp's Gemma graphs can reproduce: Gemma 2 always soft-caps scores and logits;
/// Gemma 3 slides on a periodic pattern and never soft-caps.
fn check_gemma(cfg: &ModelConfig, arch: &str) -> Result<(), String> {
    if cfg.sliding_window.is_none() {
        return Err(format!(
            "llama.cpp's `{arch}` expects sliding-window layers, and this model has none"
        ));
    }
    if gemma_pattern(cfg).is_none() {
        return Err(format!(
            "the sliding layers (`layer_types`) do not follow a period llama.cpp's `{arch}` can state"
        ));
    }
    let rule = crate::config::gemma_query_scalar(
        cfg.family,
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.head_dim,
    );
    if cfg.query_pre_attn_scalar != Some(rule) {
        return Err(format!(
            "llama.cpp's `{arch}` scales queries by 1/√{rule}, this model by 1/√{} (`query_pre_attn_scalar`)",
            cfg.query_pre_attn_scalar.unwrap_or(0.0)
        ));
    }
    match cfg.family {
        Family::Gemma2 if cfg.attn_softcap.is_none() || cfg.final_softcap.is_none() => Err(
            format!("llama.cpp's `{arch}` always soft-caps scores and logits; this model does not (`attn_logit_softcapping` / `final_logit_softcapping` null)"),
        ),
        Family::Gemma3 if cfg.final_softcap.is_some() => Err(format!(
            "llama.cpp's `{arch}` with sliding layers does not soft-cap logits (`final_logit_softcapping`)"
        )),
        _ => Ok(()),
    }
}

/// Interleave the rotary halves of each head's rows, as llama.cpp's converter does to Q and
/// K (the inverse of [`crate::weights::unpermute_qk`]).
pub fn permute_qk(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let rest: usize = dims[1..].iter().product();
    let half = dims[0] / n_head / 2;
    w.reshape((n_head, 2, half, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// The head count whose permutation an HF tensor needs in a `llama` GGUF, if any.
pub fn qk_heads(hf: &str, cfg: &ModelConfig) -> Option<usize> {
    if !permutes_qk(cfg.family) {
        return None;
    }
    if hf.contains(".self_attn.q_proj.") {
        Some(cfg.num_heads)
    } else if hf.contains(".self_attn.k_proj.") {
        Some(cfg.num_kv_heads)
    } else {
        None
    }
}

/// A tensor in the requested storage type; 1-D tensors (norms, biases) and shapes whose rows
/// do not split into blocks stay f32, as llama.cpp's converter keeps them.
pub fn to_qtensor(t: &Tensor, dtype: GgmlDType) -> candle_core::Result<QTensor> {
    let t = t
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?;
    let cols = *t.dims().last().unwrap_or(&1);
    let dtype = if t.rank() < 2 || !cols.is_multiple_of(dtype.block_size()) {
        GgmlDType::F32
    } else {
        dtype
    };
    QTensor::quantize(&t, dtype)
}

/// Metadata of a LoRA adapter for `cfg`'s architecture. `alpha` is what llama.cpp divides
/// by `r` (already adjusted for rsLoRA by the caller).
pub fn adapter_metadata(cfg: &ModelConfig, alpha: f32, name: &str) -> Vec<(String, GgufValue)> {
    vec![
        (
            "general.architecture".into(),
            GgufValue::String(gguf_architecture(cfg.family).into()),
        ),
        ("general.type".into(), GgufValue::String("adapter".into())),
        ("general.name".into(), GgufValue::String(name.into())),
        ("adapter.type".into(), GgufValue::String("lora".into())),
        ("adapter.lora.alpha".into(), GgufValue::F32(alpha)),
    ]
}

/// The architecture metadata llama.cpp reads for `cfg` (a GGUF written from an HF folder).
/// Llama 3 rope scaling travels as a `rope_freqs.weight` tensor the caller adds.
pub fn model_metadata(cfg: &ModelConfig, name: &str, file_type: u32) -> Vec<(String, GgufValue)> {
    let arch = gguf_architecture(cfg.family);
    let k = |key: &str| format!("{arch}.{key}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut md = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String(arch.into()),
        ),
        ("general.name".into(), GgufValue::String(name.into())),
        ("general.file_type".into(), GgufValue::U32(file_type)),
        ("general.quantization_version".into(), GgufValue::U32(2)),
        (k("context_length"), u(cfg.max_position_embeddings)),
        (k("embedding_length"), u(cfg.hidden_size)),
        (k("feed_forward_length"), u(cfg.intermediate_size)),
        (k("block_count"), u(cfg.num_layers)),
        (k("attention.head_count"), u(cfg.num_heads)),
        (k("attention.head_count_kv"), u(cfg.num_kv_heads)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(cfg.rms_norm_eps as f32),
        ),
        (k("rope.freq_base"), GgufValue::F32(cfg.rope_theta as f32)),
        (k("rope.dimension_count"), u(cfg.rotary_dim)),
        (k("attention.key_length"), u(cfg.head_dim)),
        (k("attention.value_length"), u(cfg.head_dim)),
        (k("vocab_size"), u(cfg.vocab_size)),
    ];
    if let Some(crate::config::RopeScaling::Linear { factor }) = &cfg.rope_scaling {
        md.push((k("rope.scaling.type"), GgufValue::String("linear".into())));
        md.push((k("rope.scaling.factor"), GgufValue::F32(*factor as f32)));
    }
    if let Some(crate::config::RopeScaling::LongRope {
        original_max_position_embeddings,
        attention_factor,
        ..
    }) = &cfg.rope_scaling
    {
        // the factors themselves travel as `rope_factors_short/long.weight` tensors
        md.push((
            k("rope.scaling.original_context_length"),
            u(*original_max_position_embeddings as usize),
        ));
        md.push((
            k("rope.scaling.attn_factor"),
            GgufValue::F32(*attention_factor as f32),
        ));
    }
    if cfg.family.is_gemma() {
        if let Some(w) = cfg.sliding_window {
            md.push((k("attention.sliding_window"), u(w)));
        }
        if let Some(p) = gemma_pattern(cfg).filter(|&p| p != gemma_default_pattern(cfg.family)) {
            md.push((k("attention.sliding_window_pattern"), u(p)));
        }
        if let Some(s) = cfg.query_pre_attn_scalar {
            md.push((
                k("attention.scale"),
                GgufValue::F32((1.0 / s.sqrt()) as f32),
            ));
        }
        for (key, v) in [
            ("attn_logit_softcapping", cfg.attn_softcap),
            ("final_logit_softcapping", cfg.final_softcap),
            ("rope.freq_base_swa", cfg.local_rope_theta),
        ] {
            if let Some(v) = v {
                md.push((k(key), GgufValue::F32(v as f32)));
            }
        }
    }
    md
}

/// The `general.name` to write for a model. llama.cpp sets token attributes by model name:
/// for a name containing "phi3" or "phi-3" it looks up `</s>`, `<unk>`, `<s>` and
/// `<|endoftext|>` and fails to load the file ("unordered_map::at") when the vocabulary lacks
/// one, so such a name is written with a space ("Phi 3") for those vocabularies.
pub fn llama_cpp_model_name(name: &str, tokens: &[&str]) -> String {
    let lower = name.to_lowercase();
    let keyed = lower.contains("phi3") || lower.contains("phi-3");
    let has_all = ["</s>", "<unk>", "<s>", "<|endoftext|>"]
        .iter()
        .all(|t| tokens.contains(t));
    if !keyed || has_all {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.to_lowercase().find("phi") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        match rest.as_bytes().first() {
            Some(b'3') => out.push(' '),
            Some(b'-') if rest.as_bytes().get(1) == Some(&b'3') => {
                out.push(' ');
                rest = &rest[1..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}

/// Write a GGUF file (version 2, 32-byte alignment) with metadata sorted by key.
pub fn write(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[(String, QTensor)],
) -> Result<(), String> {
    let mut md: Vec<(&str, &GgufValue)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    md.sort_by_key(|(k, _)| *k);
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let file = std::fs::File::create(path)
        .map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    gguf_file::write(&mut w, &md, &ts).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = w
        .into_inner()
        .map_err(|e| format!("{}: {}", path.display(), e.error()))?;
    file.sync_all()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The `general.file_type` llama.cpp records for a model mostly stored as `dtype`.
pub fn file_type(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q8_0 => 7,
        GgmlDType::BF16 => 32,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;
    use crate::weights::{hf_name, unpermute_qk};

    #[test]
    fn names_round_trip() {
        for hf in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.3.self_attn.q_proj.weight",
            "model.layers.0.self_attn.k_proj.bias",
            "model.layers.12.mlp.down_proj.weight",
            "model.layers.1.post_attention_layernorm.weight",
        ] {
            let g = gguf_name(hf, Family::Llama).unwrap();
            assert_eq!(hf_name(&g, Family::Llama).as_deref(), Some(hf), "{g}");
        }
        assert_eq!(
            gguf_name("model.layers.2.self_attn.o_proj.weight", Family::Llama).unwrap(),
            "blk.2.attn_output.weight"
        );
    }

    #[test]
    fn permutation_is_undone_by_the_importer() {
        let w = Tensor::arange(0f32, 8.0 * 12.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 12))
            .unwrap();
        let p = permute_qk(&w, 2).unwrap();
        assert_ne!(p.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let back = unpermute_qk(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        // rows of one head: [0 1 2 3] (halves [0 1] and [2 3]) become [0 2 1 3]
        let rows: Vec<f32> = p
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|r| r[0] / 12.0)
            .collect();
        assert_eq!(rows, [0., 2., 1., 3., 4., 6., 5., 7.]);
    }

    /// A Phi-3 config written as GGUF metadata plus its LongRoPE tensors reads back as the
    /// same model (names aside: GGUF keeps no dropout and fixes the window off, as llama.cpp).
    #[test]
    fn a_phi3_gguf_reads_back_as_the_same_model() {
        let hf = serde_json::json!({
            "model_type": "phi3", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 0.0000152587890625, "rope_theta": 5000.0, "tie_word_embeddings": false,
            "hidden_act": "silu", "partial_rotary_factor": 0.5, "max_position_embeddings": 256,
            "original_max_position_embeddings": 32,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.5, 2.0, 3.0],
                             "long_factor": [1.0, 2.0, 4.0, 8.0]}
        });
        let cfg = ModelConfig::from_hf_value(&hf, Path::new("config.json")).unwrap();
        assert_eq!(cfg.rotary_dim, 8);
        let md = model_metadata(&cfg, "tiny", 0);
        let get = |k: &str| {
            md.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("phi3.rope.dimension_count").to_u32().unwrap(), 8);
        assert_eq!(
            get("phi3.rope.scaling.original_context_length")
                .to_u32()
                .unwrap(),
            32
        );
        // transformers' default: sqrt(1 + ln(256 / 32) / ln(32))
        let a = (1.0f64 + 8f64.ln() / 32f64.ln()).sqrt() as f32;
        assert_eq!(get("phi3.rope.scaling.attn_factor").to_f32().unwrap(), a);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("phi3.gguf");
        let t = |shape: &[usize]| {
            to_qtensor(
                &Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap(),
                GgmlDType::F32,
            )
            .unwrap()
        };
        let factors =
            |v: &[f32]| to_qtensor(&Tensor::new(v, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap();
        let tensors = vec![
            ("token_embd.weight".to_string(), t(&[64, 64])),
            ("output.weight".to_string(), t(&[64, 64])),
            ("blk.0.attn_qkv.weight".to_string(), t(&[128, 64])),
            ("blk.0.ffn_up.weight".to_string(), t(&[192, 64])),
            (
                "rope_factors_short.weight".to_string(),
                factors(&[1.0, 1.5, 2.0, 3.0]),
            ),
            (
                "rope_factors_long.weight".to_string(),
                factors(&[1.0, 2.0, 4.0, 8.0]),
            ),
        ];
        write(&f, &md, &tensors).unwrap();
        let content = crate::weights::read_gguf(&f).unwrap();
        let rope = crate::weights::gguf_rope_factors(&f, &content).unwrap();
        let back = ModelConfig::from_gguf(&f, &content, rope).unwrap();
        let RopeScaling::LongRope {
            attention_factor, ..
        } = back.rope_scaling.clone().unwrap()
        else {
            panic!("{:?}", back.rope_scaling)
        };
        assert_eq!(attention_factor, a as f64);
        // the attention factor rounded to f32 aside (eps is 2^-16, exact in f32), the same model
        let expected = ModelConfig {
            rope_scaling: back.rope_scaling.clone(),
            bos_token_id: None,
            eos_token_ids: vec![],
            ..cfg
        };
        assert_eq!(back, expected);
        // the fused tensors' names map to HF's fused modules
        assert_eq!(
            crate::weights::hf_name("blk.3.ffn_up.weight", Family::Phi3).as_deref(),
            Some("model.layers.3.mlp.gate_up_proj.weight")
        );
        assert_eq!(
            gguf_name("model.layers.3.self_attn.qkv_proj.weight", Family::Phi3).as_deref(),
            Some("blk.3.attn_qkv.weight")
        );
    }

    #[test]
    fn phi3_names_llama_cpp_would_key_on_are_spaced_for_small_vocabularies() {
        assert_eq!(llama_cpp_model_name("phi3", &["a"]), "phi 3");
        assert_eq!(
            llama_cpp_model_name("My-Phi-3.5-mini", &["a"]),
            "My-Phi 3.5-mini"
        );
        let full = ["</s>", "<unk>", "<s>", "<|endoftext|>"];
        assert_eq!(llama_cpp_model_name("Phi-3-mini", &full), "Phi-3-mini");
        assert_eq!(llama_cpp_model_name("Phi-4-mini", &["a"]), "Phi-4-mini");
    }

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.gguf");
        let t = Tensor::ones((4, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let tensors = vec![
            (
                "x.lora_a".to_string(),
                to_qtensor(&t, GgmlDType::F32).unwrap(),
            ),
            ("y".to_string(), to_qtensor(&t, GgmlDType::Q8_0).unwrap()),
        ];
        let md = vec![("adapter.lora.alpha".to_string(), GgufValue::F32(16.0))];
        write(&f, &md, &tensors).unwrap();
        let mut r = std::fs::File::open(&f).unwrap();
        let c = gguf_file::Content::read(&mut r).unwrap();
        assert_eq!(c.metadata["adapter.lora.alpha"].to_f32().unwrap(), 16.0);
        assert_eq!(c.tensor_infos["y"].ggml_dtype, GgmlDType::Q8_0);
        let back = c
            .tensor(&mut r, "y", &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        assert_eq!(back.dims(), [4, 64]);
    }
}
