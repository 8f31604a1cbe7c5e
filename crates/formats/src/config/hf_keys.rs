//! The `config.json` keys that need more than a lookup: rope settings and scaling in both
//! generations, Gemma 3's two ropes, Phi-3's LongRoPE and partial rotary, which layers use
//! rope and a sliding window, and the keys refused by name.

use super::*;

pub(super) type FieldErr<'a> = dyn Fn(&str, &str) -> FileError + 'a;

/// `obj[key]` as a number; `None` when absent or null. `field` names it in the error.
pub(super) fn optional_number(
    obj: &Value,
    key: &str,
    field: &str,
    field_err: &FieldErr,
) -> Result<Option<f64>, FileError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| field_err(field, &format!("expected a number, got {v}"))),
    }
}

/// Refuse a `partial_rotary_factor` other than 1 in `obj` (rotating only part of each head).
pub(super) fn refuse_partial_rotary(
    obj: &Value,
    field: &str,
    field_err: &FieldErr,
) -> Result<(), FileError> {
    match optional_number(obj, "partial_rotary_factor", field, field_err)? {
        Some(p) if p != 1.0 => Err(field_err(
            field,
            &format!("{p}: rotating part of each head is not supported (only 1.0)"),
        )),
        _ => Ok(()),
    }
}

/// Rotary settings from either generation of `config.json`: transformers 4 keeps
/// `rope_theta` and `rope_scaling` at the top level, transformers 5 one `rope_parameters`
/// object (`{"rope_type", "rope_theta", ...scaling keys}`). Where both are present they must
/// agree; a per-layer-type `rope_parameters` (different rope for sliding and full attention
/// layers) is refused by name, since these families use one rope for every layer.
pub(super) fn rope_settings(
    json: &Value,
    field_err: &FieldErr,
) -> Result<(f64, Option<RopeScaling>), FileError> {
    let top_theta = optional_number(json, "rope_theta", "rope_theta", field_err)?;
    let old_scaling = match json.get("rope_scaling") {
        None | Some(Value::Null) => None,
        Some(v) => Some(rope_scaling_from(v, "rope_scaling", field_err)?),
    };
    let params = match json.get("rope_parameters") {
        None | Some(Value::Null) => {
            return Ok((top_theta.unwrap_or(10_000.0), old_scaling.flatten()));
        }
        Some(v) => v,
    };
    if let Some(m) = params.as_object() {
        if !m.is_empty() && m.values().all(Value::is_object) {
            let kinds: Vec<&str> = m.keys().map(String::as_str).collect();
            return Err(field_err(
                "rope_parameters",
                &format!(
                    "one rope per layer type ({}) is not supported: every layer of these \
                     architectures uses the same rope",
                    kinds.join(", ")
                ),
            ));
        }
    }
    let scaling = rope_scaling_from(params, "rope_parameters", field_err)?;
    let theta = optional_number(
        params,
        "rope_theta",
        "rope_parameters.rope_theta",
        field_err,
    )?;
    if let (Some(a), Some(b)) = (top_theta, theta) {
        if a != b {
            return Err(field_err(
                "rope_parameters.rope_theta",
                &format!("{b} disagrees with the top-level rope_theta = {a}"),
            ));
        }
    }
    if let Some(old) = old_scaling {
        if old != scaling {
            return Err(field_err(
                "rope_parameters",
                "disagrees with the top-level rope_scaling; a config should state its rope once",
            ));
        }
    }
    Ok((theta.or(top_theta).unwrap_or(10_000.0), scaling))
}

/// Gemma 3's two ropes: the full-attention layers' theta and scaling, and the sliding
/// layers' theta (always unscaled). transformers 4 writes `rope_theta`, `rope_scaling` (for
/// the full layers) and `rope_local_base_freq`; transformers 5 one `rope_parameters` object
/// per layer type. Where both forms are present they must agree.
pub(super) fn gemma3_rope(
    json: &Value,
    field_err: &FieldErr,
) -> Result<(f64, Option<RopeScaling>, Option<f64>), FileError> {
    let top_theta = optional_number(json, "rope_theta", "rope_theta", field_err)?;
    let top_local = optional_number(
        json,
        "rope_local_base_freq",
        "rope_local_base_freq",
        field_err,
    )?;
    let old_scaling = match json.get("rope_scaling") {
        None | Some(Value::Null) => None,
        Some(v) => rope_scaling_from(v, "rope_scaling", field_err)?,
    };
    let (mut theta, mut scaling, mut local) = (
        top_theta.unwrap_or(1_000_000.0),
        old_scaling.clone(),
        top_local.unwrap_or(10_000.0),
    );
    if let Some(params) = json.get("rope_parameters").filter(|v| !v.is_null()) {
        type Part = Option<(Option<f64>, Option<RopeScaling>)>;
        let part = |kind: &str| -> Result<Part, FileError> {
            let at = format!("rope_parameters.{kind}");
            match params.get(kind) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => Ok(Some((
                    optional_number(v, "rope_theta", &format!("{at}.rope_theta"), field_err)?,
                    rope_scaling_from(v, &at, field_err)?,
                ))),
            }
        };
        if !params.is_object() {
            return Err(field_err(
                "rope_parameters",
                &format!("expected an object, got {params}"),
            ));
        }
        if let Some((t, sc)) = part("full_attention")? {
            if let (Some(a), Some(b)) = (top_theta, t) {
                if a != b {
                    return Err(field_err(
                        "rope_parameters.full_attention.rope_theta",
                        &format!("{b} disagrees with the top-level rope_theta = {a}"),
                    ));
                }
            }
            theta = t.unwrap_or(theta);
            scaling = sc;
        }
        if let Some((t, sc)) = part("sliding_attention")? {
            if let Some(sc) = sc {
                return Err(field_err(
                    "rope_parameters.sliding_attention.rope_type",
                    &format!("{sc:?}: scaling the sliding layers' rope is not supported"),
                ));
            }
            if let (Some(a), Some(b)) = (top_local, t) {
                if a != b {
                    return Err(field_err(
                        "rope_parameters.sliding_attention.rope_theta",
                        &format!("{b} disagrees with rope_local_base_freq = {a}"),
                    ));
                }
            }
            local = t.unwrap_or(local);
        }
    }
    Ok((theta, scaling, Some(local)))
}

/// The scaling a `rope_scaling` (4.x) or `rope_parameters` (5.x) object describes; `None`
/// for `default`. Keys that change the rope but are not implemented are refused by name.
pub(super) fn rope_scaling_from(
    v: &Value,
    at: &str,
    field_err: &FieldErr,
) -> Result<Option<RopeScaling>, FileError> {
    if !v.is_object() {
        return Err(field_err(at, &format!("expected an object, got {v}")));
    }
    refuse_partial_rotary(v, &format!("{at}.partial_rotary_factor"), field_err)?;
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64, FileError> {
        v.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| field_err(&format!("{at}.{k}"), "missing or not a number"))
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => {
            return Err(field_err(
                &format!("{at}.rope_type"),
                &format!("\"{other}\" is not supported (supported: default, linear, llama3)"),
            ))
        }
    })
}

/// Keys that change what the model computes and that these families do not implement:
/// refused by name with their value rather than ignored (a silent misread trains the wrong
/// function).
pub(super) fn refuse_unsupported_math(json: &Value, field_err: &FieldErr) -> Result<(), FileError> {
    refuse_partial_rotary(json, "partial_rotary_factor", field_err)?;
    refuse_softcapping(json, field_err)
}

/// Logit soft-capping, which only the Gemma families implement.
pub(super) fn refuse_softcapping(json: &Value, field_err: &FieldErr) -> Result<(), FileError> {
    for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if let Some(v) = json.get(k).filter(|v| !v.is_null()) {
            return Err(field_err(
                k,
                &format!("{v}: logit soft-capping is not supported"),
            ));
        }
    }
    Ok(())
}

/// Phi-3's rope: `rope_theta` and a LongRoPE `rope_scaling` (transformers 4; `su` and `yarn`
/// are its old names for it, as transformers' Phi-3 class reads them) or one
/// `rope_parameters` object (transformers 5). `original_max_position_embeddings` sits at the
/// top level in the 4.x form, inside the rope object in 5.x.
pub(super) fn phi3_rope(
    json: &Value,
    field_err: &FieldErr,
) -> Result<(f64, Option<RopeScaling>), FileError> {
    let top_theta = optional_number(json, "rope_theta", "rope_theta", field_err)?;
    let set = |k: &str| json.get(k).filter(|v| !v.is_null());
    let (obj, at) = match (set("rope_parameters"), set("rope_scaling")) {
        (Some(p), Some(s)) => {
            // both forms: they must state the same rope
            let same = |k: &str| p.get(k) == s.get(k);
            let kind = |v: &Value| {
                v.get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(Value::as_str)
                    .map(|t| {
                        if matches!(t, "su" | "yarn") {
                            "longrope"
                        } else {
                            t
                        }
                    })
                    .unwrap_or("default")
                    .to_string()
            };
            if kind(p) != kind(s) || !same("short_factor") || !same("long_factor") {
                return Err(field_err(
                    "rope_scaling",
                    "disagrees with rope_parameters; a config should state its rope once",
                ));
            }
            (Some(p), "rope_parameters")
        }
        (Some(p), None) => (Some(p), "rope_parameters"),
        (None, Some(s)) => (Some(s), "rope_scaling"),
        (None, None) => (None, ""),
    };
    let Some(obj) = obj else {
        return Ok((top_theta.unwrap_or(10_000.0), None));
    };
    if !obj.is_object() {
        return Err(field_err(at, &format!("expected an object, got {obj}")));
    }
    let theta = optional_number(obj, "rope_theta", &format!("{at}.rope_theta"), field_err)?;
    if let (Some(a), Some(b)) = (top_theta, theta) {
        if a != b {
            return Err(field_err(
                &format!("{at}.rope_theta"),
                &format!("{b} disagrees with the top-level rope_theta = {a}"),
            ));
        }
    }
    let theta = theta.or(top_theta).unwrap_or(10_000.0);
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok((theta, None)),
        "longrope" | "su" | "yarn" => {
            let list = |k: &str| -> Result<Vec<f64>, FileError> {
                obj.get(k)
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                    .filter(|v| v.iter().all(|x| x.is_finite() && *x > 0.0))
                    .ok_or_else(|| {
                        field_err(
                            &format!("{at}.{k}"),
                            "missing or not a list of positive numbers",
                        )
                    })
            };
            let (short_factor, long_factor) = (list("short_factor")?, list("long_factor")?);
            let original = optional_number(
                obj,
                "original_max_position_embeddings",
                &format!("{at}.original_max_position_embeddings"),
                field_err,
            )?
            .or(optional_number(
                json,
                "original_max_position_embeddings",
                "original_max_position_embeddings",
                field_err,
            )?)
            .unwrap_or(4096.0);
            let max = optional_number(
                json,
                "max_position_embeddings",
                "max_position_embeddings",
                field_err,
            )?
            .unwrap_or(4096.0);
            let factor = optional_number(obj, "factor", &format!("{at}.factor"), field_err)?
                .unwrap_or(max / original);
            let attention_factor = match optional_number(
                obj,
                "attention_factor",
                &format!("{at}.attention_factor"),
                field_err,
            )? {
                Some(a) => a,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / original.ln()).sqrt(),
            };
            if !(original.is_finite() && original > 1.0) {
                return Err(field_err(
                    "original_max_position_embeddings",
                    &format!("{original} must be a number > 1"),
                ));
            }
            Ok((
                theta,
                Some(RopeScaling::LongRope {
                    short_factor,
                    long_factor,
                    original_max_position_embeddings: original,
                    attention_factor,
                }),
            ))
        }
        other => Err(field_err(
            &format!("{at}.rope_type"),
            &format!("\"{other}\" is not supported for phi3 (supported: default, longrope)"),
        )),
    }
}

/// How many leading dimensions of each head Phi-3 rotates: `partial_rotary_factor` (top level
/// in transformers 4, in `rope_parameters` in 5) times `head_dim`, rounded down as
/// transformers does.
pub(super) fn phi3_rotary_dim(
    json: &Value,
    head_dim: usize,
    field_err: &FieldErr,
) -> Result<usize, FileError> {
    let inner = match json.get("rope_parameters").filter(|v| v.is_object()) {
        Some(p) => optional_number(
            p,
            "partial_rotary_factor",
            "rope_parameters.partial_rotary_factor",
            field_err,
        )?,
        None => None,
    };
    let top = optional_number(
        json,
        "partial_rotary_factor",
        "partial_rotary_factor",
        field_err,
    )?;
    if let (Some(a), Some(b)) = (top, inner) {
        if a != b {
            return Err(field_err(
                "partial_rotary_factor",
                &format!("{a} disagrees with rope_parameters.partial_rotary_factor = {b}"),
            ));
        }
    }
    let factor = inner.or(top).unwrap_or(1.0);
    let dim = (head_dim as f64 * factor) as usize;
    if !(factor > 0.0 && factor <= 1.0) || dim == 0 || dim % 2 == 1 {
        return Err(field_err(
            "partial_rotary_factor",
            &format!("{factor} rotates {dim} of {head_dim} dimensions; it must be an even, positive number"),
        ));
    }
    Ok(dim)
}

/// SmolLM3's `no_rope_layers` (1 = the layer rotates, 0 = it does not), or the pattern its
/// `no_rope_layer_interval` implies (every n-th layer without rope); empty (all rotate) for
/// the other families.
pub(super) fn rope_layers(
    json: &Value,
    family: Family,
    num_layers: usize,
    field_err: &FieldErr,
) -> Result<Vec<bool>, FileError> {
    if family != Family::SmolLM3 {
        // a list with a layer left unrotated belongs to another class: refused, not ignored
        if let Some(v) = json.get("no_rope_layers").filter(|v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() != Some(1)))
        }) {
            return Err(field_err(
                "no_rope_layers",
                &format!("{v}: {} rotates every layer", family.as_str()),
            ));
        }
        return Ok(vec![]);
    }
    match json.get("no_rope_layers") {
        None | Some(Value::Null) => {
            let every = match json.get("no_rope_layer_interval") {
                None | Some(Value::Null) => 4,
                Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                    field_err(
                        "no_rope_layer_interval",
                        &format!("expected a positive integer, got {v}"),
                    )
                })? as usize,
            };
            Ok((0..num_layers).map(|l| (l + 1) % every != 0).collect())
        }
        Some(Value::Array(a)) if a.len() != num_layers => Err(field_err(
            "no_rope_layers",
            &format!("has {} entries, num_hidden_layers = {num_layers}", a.len()),
        )),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_u64() {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(field_err(
                    &format!("no_rope_layers[{i}]"),
                    &format!("expected 0 or 1, got {v}"),
                )),
            })
            .collect(),
        Some(v) => Err(field_err(
            "no_rope_layers",
            &format!("expected a list of 0 and 1, got {v}"),
        )),
    }
}

/// Which layers use sliding-window attention, and the window, as each family's
/// transformers class decides it: an explicit `layer_types` list where the family reads one,
/// else Mistral slides on every layer when `sliding_window` is set (4096 when absent, its
/// class default), Qwen2/Qwen3 with `use_sliding_window` on the layers from
/// `max_window_layers` on, SmolLM3 with `use_sliding_window` on the layers without rope.
pub(super) fn sliding_layers(
    json: &Value,
    family: Family,
    num_layers: usize,
    rope_layers: &[bool],
    field_err: &FieldErr,
) -> Result<(Option<usize>, Vec<bool>), FileError> {
    let set = |k: &str| json.get(k).filter(|v| !v.is_null());
    let window = match set("sliding_window") {
        None if matches!(family, Family::Mistral | Family::Gemma2 | Family::Gemma3)
            && json.get("sliding_window").is_none() =>
        {
            Some(4096)
        }
        None => None,
        Some(v) => Some(v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
            field_err(
                "sliding_window",
                &format!("expected a positive integer or null, got {v}"),
            )
        })? as usize),
    };
    let use_sliding = match set("use_sliding_window") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            field_err(
                "use_sliding_window",
                &format!("expected true or false, got {v}"),
            )
        })?,
    };
    let listed: Option<Vec<bool>> = match set("layer_types") {
        None => None,
        Some(Value::Array(types)) => Some(
            types
                .iter()
                .enumerate()
                .map(|(i, t)| match t.as_str() {
                    Some("full_attention") => Ok(false),
                    Some("sliding_attention") => Ok(true),
                    _ => Err(field_err(
                        &format!("layer_types[{i}]"),
                        &format!(
                            "{t} is not supported (supported: \"full_attention\", \"sliding_attention\")"
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(v) => {
            return Err(field_err(
                "layer_types",
                &format!("expected a list, got {v}"),
            ))
        }
    };
    if let Some(l) = listed.as_ref().filter(|l| l.len() != num_layers) {
        return Err(field_err(
            "layer_types",
            &format!("has {} entries, num_hidden_layers = {num_layers}", l.len()),
        ));
    }
    let derived: Vec<bool> = match family {
        Family::Llama => vec![false; num_layers],
        Family::Mistral | Family::Phi3 => vec![window.is_some(); num_layers],
        Family::Qwen2 | Family::Qwen3 => {
            let from = match set("max_window_layers") {
                None => 28,
                Some(v) => v.as_u64().ok_or_else(|| {
                    field_err(
                        "max_window_layers",
                        &format!("expected a non-negative integer, got {v}"),
                    )
                })? as usize,
            };
            (0..num_layers)
                .map(|l| use_sliding && window.is_some() && l >= from)
                .collect()
        }
        Family::SmolLM3 => (0..num_layers)
            .map(|l| {
                use_sliding && window.is_some() && !rope_layers.get(l).copied().unwrap_or(true)
            })
            .collect(),
        // every layer but each `pattern`-th slides (Gemma 2: every other one)
        Family::Gemma2 | Family::Gemma3 => {
            let pattern = match (family, set("sliding_window_pattern")) {
                (Family::Gemma2, _) => 2,
                (_, None) => 6,
                (_, Some(v)) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                    field_err(
                        "sliding_window_pattern",
                        &format!("expected a positive integer, got {v}"),
                    )
                })? as usize,
            };
            (0..num_layers)
                .map(|l| window.is_some() && (l + 1) % pattern != 0)
                .collect()
        }
    };
    let layers = match (family, listed) {
        // Llama's and Mistral's classes ignore `layer_types`: a list that disagrees with what
        // they compute is a folder meant for another class
        (Family::Llama | Family::Mistral | Family::Phi3, Some(l)) if l != derived => {
            let i = l
                .iter()
                .zip(&derived)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(field_err(
                &format!("layer_types[{i}]"),
                &format!(
                    "\"{}\" is not what {} computes for this layer",
                    if l[i] {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    },
                    family.as_str()
                ),
            ));
        }
        (Family::Gemma2 | Family::Gemma3, Some(l)) => {
            if l.iter().any(|&s| s) && window.is_none() {
                let i = l.iter().position(|&s| s).unwrap_or(0);
                return Err(field_err(
                    &format!("layer_types[{i}]"),
                    "\"sliding_attention\" but sliding_window is null",
                ));
            }
            l
        }
        (Family::Qwen2 | Family::Qwen3 | Family::SmolLM3, Some(l)) => {
            // these classes drop the window unless `use_sliding_window` is on
            if l.iter().any(|&s| s) && !(use_sliding && window.is_some()) {
                let i = l.iter().position(|&s| s).unwrap_or(0);
                return Err(field_err(
                    &format!("layer_types[{i}]"),
                    "\"sliding_attention\" but use_sliding_window is off or sliding_window is null",
                ));
            }
            l
        }
        _ => derived,
    };
    if layers.iter().any(|&s| s) {
        Ok((window, layers))
    } else {
        Ok((None, vec![]))
    }
}
