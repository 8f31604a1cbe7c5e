//! Tiny GGUF models of every family llama.cpp names, written with candle's GGUF writer and
//! the crate's own metadata, and the keys and tensor names the GGUF mutator aims at.

use super::*;

pub(super) fn q(t: &Tensor, dtype: GgmlDType) -> QTensor {
    gguf_out::to_qtensor(t, dtype).expect("seed tensor quantizes")
}

pub(super) fn tensor(shape: &[usize], salt: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 + salt) * 0.37).sin() * 0.1)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("seed tensor")
}

/// The decoder tensors of a one-layer model (GGUF names, ggml types of every kind we read).
pub(super) fn model_tensors(cfg: &ModelConfig) -> Vec<(String, QTensor)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (qd, kvd) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let mut ts = vec![
        ("token_embd.weight", vec![v, h], GgmlDType::Q8_0),
        ("output_norm.weight", vec![h], GgmlDType::F32),
        ("blk.0.attn_norm.weight", vec![h], GgmlDType::F32),
        ("blk.0.ffn_norm.weight", vec![h], GgmlDType::F32),
        ("blk.0.attn_q.weight", vec![qd, h], GgmlDType::Q8_0),
        ("blk.0.attn_k.weight", vec![kvd, h], GgmlDType::F16),
        ("blk.0.attn_v.weight", vec![kvd, h], GgmlDType::Q4_0),
        ("blk.0.attn_output.weight", vec![h, qd], GgmlDType::Q4_1),
        ("blk.0.ffn_gate.weight", vec![i, h], GgmlDType::BF16),
        ("blk.0.ffn_up.weight", vec![i, h], GgmlDType::F32),
        ("blk.0.ffn_down.weight", vec![h, i], GgmlDType::Q8_0),
    ];
    if cfg.qk_norm {
        ts.push((
            "blk.0.attn_q_norm.weight",
            vec![cfg.head_dim],
            GgmlDType::F32,
        ));
        ts.push((
            "blk.0.attn_k_norm.weight",
            vec![cfg.head_dim],
            GgmlDType::F32,
        ));
    }
    if cfg.sandwich_norms {
        ts.push(("blk.0.post_attention_norm.weight", vec![h], GgmlDType::F32));
        ts.push(("blk.0.post_ffw_norm.weight", vec![h], GgmlDType::F32));
    }
    if cfg.qkv_bias {
        ts.push(("blk.0.attn_q.bias", vec![qd], GgmlDType::F32));
        ts.push(("blk.0.attn_k.bias", vec![kvd], GgmlDType::F32));
        ts.push(("blk.0.attn_v.bias", vec![kvd], GgmlDType::F32));
    }
    ts.into_iter()
        .enumerate()
        .map(|(k, (name, shape, dt))| (name.to_string(), q(&tensor(&shape, k as f32), dt)))
        .collect()
}

pub(super) fn tiny_json(family: &str, vocab: usize) -> Value {
    json!({
        "model_type": family, "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 128, "bos_token_id": 1, "eos_token_id": 2
    })
}

pub(super) fn tiny_config(family: &str, vocab: usize) -> ModelConfig {
    ModelConfig::from_hf_value(&tiny_json(family, vocab), Path::new("seed/config.json"))
        .expect("seed config is valid")
}

/// SentencePiece (`llama` vocabulary) metadata: pieces with scores and token types.
pub(super) fn sentencepiece_metadata() -> (usize, Vec<(String, GValue)>) {
    let mut pieces: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
    ];
    for b in [b'\n', b' ', b'!', 0xe2, 0x96, 0x81] {
        pieces.push((format!("<0x{b:02X}>"), 0.0, 6));
    }
    for (i, p) in [
        "\u{2581}",
        "a",
        "b",
        "\u{2581}a",
        "ab",
        "\u{2581}ab",
        "c",
        "[INST]",
    ]
    .iter()
    .enumerate()
    {
        pieces.push((
            p.to_string(),
            -(i as f32),
            if *p == "[INST]" { 4 } else { 1 },
        ));
    }
    let md = vec![
        (
            "tokenizer.ggml.model".into(),
            GValue::String("llama".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            GValue::Array(pieces.iter().map(|p| GValue::String(p.0.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            GValue::Array(pieces.iter().map(|p| GValue::F32(p.1)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            GValue::Array(pieces.iter().map(|p| GValue::I32(p.2)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), GValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), GValue::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), GValue::Bool(true)),
        (
            "tokenizer.chat_template".into(),
            GValue::String(MISTRAL.into()),
        ),
    ];
    (pieces.len(), md)
}

/// GGUF seeds: a Llama with a byte-level BPE vocabulary and Llama 3 rope factors, a Qwen2
/// with biases and a SentencePiece vocabulary, a Gemma 3, a Phi-3 and a LoRA adapter.
pub fn gguf_models() -> Vec<GgufSeed> {
    let mut out = vec![];
    let tok = ModelTokenizer::from_json(bpe_tokenizer(), Path::new("seed/tokenizer.json"))
        .expect("seed tokenizer is valid");
    let vocab = tok.vocab_size();
    let cfg = tiny_config("llama", vocab);
    let mut metadata = gguf_out::model_metadata(&cfg, "tiny-llama", 7);
    metadata.extend(
        gguf_tokenizer_metadata(&tok, vocab, Some(CHATML), Path::new("seed/tokenizer.json"))
            .expect("seed tokenizer converts"),
    );
    metadata.push(("general.alignment".into(), GValue::U32(32)));
    let mut tensors = model_tensors(&cfg);
    let factors = Tensor::new(&[1f32, 1.0, 2.0, 4.0], &Device::Cpu).expect("factors");
    tensors.push(("rope_freqs.weight".into(), q(&factors, GgmlDType::F32)));
    out.push(GgufSeed { metadata, tensors });

    let (vocab, tok_md) = sentencepiece_metadata();
    let cfg = tiny_config("qwen2", vocab);
    let mut metadata = gguf_out::model_metadata(&cfg, "tiny-qwen2", 1);
    metadata.extend(tok_md);
    let tensors = model_tensors(&cfg);
    out.push(GgufSeed { metadata, tensors });

    // a Gemma 3 (sandwich and q/k norms, a sliding window, the sliding layers' rope base)
    let tok = ModelTokenizer::from_json(bpe_tokenizer(), Path::new("seed/tokenizer.json"))
        .expect("seed tokenizer is valid");
    let vocab = tok.vocab_size();
    let mut json = tiny_json("gemma3_text", vocab);
    json["sliding_window"] = json!(8);
    // llama.cpp's rule: queries scaled by 1/√head_dim (Gemma's own default head_dim is 256)
    json["head_dim"] = json!(8);
    json["query_pre_attn_scalar"] = json!(8);
    let gemma = ModelConfig::from_hf_value(&json, Path::new("seed/config.json"))
        .expect("seed config is valid");
    let mut metadata = gguf_out::model_metadata(&gemma, "tiny-gemma3", 1);
    metadata.extend(
        gguf_tokenizer_metadata(&tok, vocab, Some(CHATML), Path::new("seed/tokenizer.json"))
            .expect("seed tokenizer converts"),
    );
    out.push(GgufSeed {
        metadata,
        tensors: model_tensors(&gemma),
    });

    // a Phi-3 (fused attn_qkv and ffn_up, half the head rotated, LongRoPE factor tensors)
    let tok = ModelTokenizer::from_json(bpe_tokenizer(), Path::new("seed/tokenizer.json"))
        .expect("seed tokenizer is valid");
    let vocab = tok.vocab_size();
    let mut json = tiny_json("phi3", vocab);
    json["partial_rotary_factor"] = json!(0.5);
    json["original_max_position_embeddings"] = json!(32);
    json["rope_scaling"] = json!({"type": "longrope", "short_factor": [1.0, 2.0],
                                  "long_factor": [1.0, 4.0]});
    let phi = ModelConfig::from_hf_value(&json, Path::new("seed/config.json"))
        .expect("seed config is valid");
    let mut metadata = gguf_out::model_metadata(&phi, "tiny-phi", 1);
    metadata.extend(
        gguf_tokenizer_metadata(&tok, vocab, Some(CHATML), Path::new("seed/tokenizer.json"))
            .expect("seed tokenizer converts"),
    );
    let (h, i) = (phi.hidden_size, phi.intermediate_size);
    let qkv = (phi.num_heads + 2 * phi.num_kv_heads) * phi.head_dim;
    let mut tensors: Vec<(String, QTensor)> = model_tensors(&phi)
        .into_iter()
        .filter(|(n, _)| {
            !["attn_q.", "attn_k.", "attn_v.", "ffn_gate.", "ffn_up."]
                .iter()
                .any(|m| n.contains(m))
        })
        .collect();
    tensors.push((
        "blk.0.attn_qkv.weight".into(),
        q(&tensor(&[qkv, h], 0.5), GgmlDType::Q8_0),
    ));
    tensors.push((
        "blk.0.ffn_up.weight".into(),
        q(&tensor(&[2 * i, h], 0.5), GgmlDType::F16),
    ));
    for (name, f) in [
        ("rope_factors_short.weight", [1f32, 2.0]),
        ("rope_factors_long.weight", [1f32, 4.0]),
    ] {
        let t = Tensor::new(&f, &Device::Cpu).expect("factors");
        tensors.push((name.into(), q(&t, GgmlDType::F32)));
    }
    out.push(GgufSeed { metadata, tensors });

    let metadata = gguf_out::adapter_metadata(&cfg, 16.0, "adapter");
    let a = tensor(&[4, 32], 1.0);
    let b = tensor(&[32, 4], 2.0);
    let tensors = vec![
        ("blk.0.attn_q.weight.lora_a".into(), q(&a, GgmlDType::F32)),
        ("blk.0.attn_q.weight.lora_b".into(), q(&b, GgmlDType::F16)),
    ];
    out.push(GgufSeed { metadata, tensors });
    out
}

/// GGUF metadata keys and tensor names the readers look for.
pub const GGUF_KEYS: &[&str] = &[
    "general.architecture",
    "general.alignment",
    "general.name",
    "general.type",
    "llama.block_count",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.vocab_size",
    "llama.context_length",
    "llama.rope.freq_base",
    "llama.rope.dimension_count",
    "llama.rope.scaling.type",
    "llama.rope.scaling.factor",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.attention.sliding_window",
    "llama.final_logit_softcapping",
    "qwen2.block_count",
    "qwen2.attention.head_count",
    "gemma3.attention.sliding_window",
    "gemma3.attention.sliding_window_pattern",
    "gemma3.rope.freq_base_swa",
    "gemma3.attention.scale",
    "gemma2.attn_logit_softcapping",
    "phi3.rope.dimension_count",
    "phi3.rope.scaling.attn_factor",
    "phi3.rope.scaling.original_context_length",
    "phi3.attention.sliding_window",
    "blk.0.attn_qkv.weight",
    "rope_factors_short.weight",
    "rope_factors_long.weight",
    "blk.0.attn_q_norm.weight",
    "blk.0.post_ffw_norm.weight",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.chat_template",
    "adapter.lora.alpha",
];

pub const GGUF_TENSOR_NAMES: &[&str] = &[
    "token_embd.weight",
    "output.weight",
    "output_norm.weight",
    "rope_freqs.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_q.bias",
    "blk.1.attn_q.weight",
    "blk.0.attn_qkv.weight",
    "blk.99999999999999999999.attn_q.weight",
    "blk..weight",
    "",
];
