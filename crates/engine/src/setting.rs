//! What a setting is: its key, group, kind and help text, and the parsers every key's value
//! goes through, so a bad value is refused the same way whichever section owns the key.

use crate::targets::LORA_TARGETS;
use serde::Serialize;

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

/// A key that takes one of `choices`.
pub const fn choice(
    key: &'static str,
    group: &'static str,
    choices: &'static [&'static str],
    help: &'static str,
) -> KeyInfo {
    KeyInfo {
        key,
        group,
        kind: KeyKind::Choice,
        choices,
        help,
    }
}

pub const fn key(
    key: &'static str,
    group: &'static str,
    kind: KeyKind,
    help: &'static str,
) -> KeyInfo {
    KeyInfo {
        key,
        group,
        kind,
        choices: &[],
        help,
    }
}

pub fn num<T: std::str::FromStr>(key: &str, v: &str, what: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("`{key}`: `{v}` is not {what}"))
}

pub fn positive(key: &str, v: &str) -> Result<usize, String> {
    let n: usize = num(key, v, "a whole number")?;
    if n == 0 {
        return Err(format!("`{key}` must be at least 1"));
    }
    Ok(n)
}

pub fn float_in(key: &str, v: &str, lo: f64, hi: f64) -> Result<f64, String> {
    let x: f64 = num(key, v, "a number")?;
    if !(lo..=hi).contains(&x) || !x.is_finite() {
        return Err(format!("`{key}` must be between {lo} and {hi}, not {v}"));
    }
    Ok(x)
}

pub fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{key}`: `{v}` is not true or false")),
    }
}

/// A comma list of HF linear module names, or `all-linear`.
pub fn parse_targets(key: &str, v: &str) -> Result<Vec<String>, String> {
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

/// `none` (or empty) for an optional value, else the value parsed.
pub fn optional<T>(
    v: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match v.trim() {
        "none" | "" => Ok(None),
        v => parse(v).map(Some),
    }
}

/// An optional value as `get` shows it (`none` when unset).
pub fn show<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "none".into(), |v| v.to_string())
}
