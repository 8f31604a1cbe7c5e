//! Which linear modules a target list names: the families' module names, `all-linear`,
//! and the mapping onto a model (Phi-3's fused modules included).

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
