//! The linear modules of a decoder layer: the families' module names, the shapes of a
//! model's linears, which modules a target list names (`all-linear`, Phi-3's fused modules)
//! and the parameter counts built from them.

use whetstone_formats::ModelConfig;

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
        // the Llama layout's seven, in LORA_TARGETS' order
        &LORA_TARGETS[..7]
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

/// `(in, out)` of each decoder linear, by HF module name.
pub fn linear_dims(c: &ModelConfig) -> Vec<(&'static str, usize, usize)> {
    let (h, q, kv, i) = (
        c.hidden_size,
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
        c.intermediate_size,
    );
    if c.fused_projections {
        return vec![
            ("qkv_proj", h, q + 2 * kv),
            ("o_proj", q, h),
            ("gate_up_proj", h, 2 * i),
            ("down_proj", i, h),
        ];
    }
    vec![
        ("q_proj", h, q),
        ("k_proj", h, kv),
        ("v_proj", h, kv),
        ("o_proj", q, h),
        ("gate_proj", h, i),
        ("up_proj", h, i),
        ("down_proj", i, h),
    ]
}

/// The modules a target list selects in `c` (none where the list does not fit the model:
/// the run's validation reports that).
pub fn selected(key: &str, targets: &[String], c: &ModelConfig) -> Vec<&'static str> {
    resolve_targets(key, targets, c).unwrap_or_default()
}

pub fn is_mlp(module: &str) -> bool {
    matches!(
        module,
        "gate_proj" | "up_proj" | "down_proj" | "gate_up_proj"
    )
}

pub fn has_bias(c: &ModelConfig, module: &str) -> bool {
    match module {
        "q_proj" | "k_proj" | "v_proj" | "qkv_proj" => c.qkv_bias,
        "o_proj" => c.o_bias,
        _ => c.mlp_bias,
    }
}

/// Parameters of one decoder layer.
pub fn layer_params(c: &ModelConfig) -> u64 {
    let lin: usize = linear_dims(c)
        .iter()
        .map(|&(m, i, o)| i * o + if has_bias(c, m) { o } else { 0 })
        .sum();
    // two norms per layer, four with Gemma's sandwich; Qwen3 / Gemma 3 per-head q/k norms
    let norms = if c.sandwich_norms { 4 } else { 2 } * c.hidden_size;
    let qk = if c.qk_norm { 2 * c.head_dim } else { 0 };
    (lin + norms + qk) as u64
}

/// All parameters of the base model.
pub fn base_params(c: &ModelConfig) -> u64 {
    let embed = (c.vocab_size * c.hidden_size) as u64;
    let head = if c.tie_word_embeddings { 0 } else { embed };
    embed + head + c.hidden_size as u64 + c.num_layers as u64 * layer_params(c)
}
