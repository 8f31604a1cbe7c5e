//! Tokenizers: an HF `tokenizer.json`, or one rebuilt from a GGUF file's `tokenizer.ggml.*`
//! metadata.
//!
//! The GGUF route writes the same `tokenizer.json` document the HF tokenizers library reads,
//! so both routes end in one `tokenizers::Tokenizer` (and an export can save that document
//! next to a merged model). Two GGUF vocabularies are understood:
//! - `gpt2`: byte-level BPE with ranked merges; the pre-tokenizer regex depends on
//!   `tokenizer.ggml.pre` (llama.cpp's name for the model's split rules);
//! - `llama`: SentencePiece BPE with byte fallback; merges are rebuilt from the piece scores.

use crate::error::FileError;
use candle_core::quantized::gguf_file::{self, Value as GValue};
use serde_json::{json, Value};
use std::path::Path;
use std::str::FromStr;

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// A model's tokenizer plus the special ids generation needs.
pub struct ModelTokenizer {
    pub inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Every id that ends generation (config, generation_config and tokenizer eos).
    pub eos_ids: Vec<u32>,
    /// The `tokenizer.json` document this tokenizer was built from.
    pub json: Value,
}

impl ModelTokenizer {
    pub fn from_json(json: Value, source: &Path) -> Result<Self, FileError> {
        check_document(&json).map_err(|e| FileError::new(source, e))?;
        let mut inner = tokenizers::Tokenizer::from_str(&json.to_string())
            .map_err(|e| FileError::new(source, format!("not a usable tokenizer: {e}")))?;
        // transformers turns the document's padding and truncation off unless a call asks
        // for them (and Whetstone pads and truncates rows itself); a hostile fixed padding
        // length would otherwise size an allocation on every encode
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| FileError::new(source, format!("field `truncation`: {e}")))?;
        Ok(Self {
            inner,
            bos_token: None,
            eos_token: None,
            eos_ids: vec![],
            json,
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError::new(path, format!("cannot read: {e}")))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| FileError::new(path, format!("not valid JSON: {e}")))?;
        Self::from_json(json, path)
    }

    /// Token ids for `text`, with the special tokens the tokenizer's post-processor adds
    /// (e.g. a BOS), as `tokenizer(text)` does in transformers.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| crate::error::one_line(&e.to_string()))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| crate::error::one_line(&e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The highest id the tokenizer can produce must fit the embedding matrix.
    pub fn check_fits(&self, model_vocab: usize, source: &Path) -> Result<(), FileError> {
        let max_id = self
            .inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .unwrap_or(0) as usize;
        if max_id >= model_vocab {
            return Err(FileError::new(
                source,
                format!(
                    "the tokenizer does not match the model: it has token ids up to {max_id} but the model's vocabulary has {model_vocab} rows"
                ),
            ));
        }
        Ok(())
    }
}

/// Refuse documents the tokenizers library accepts but then panics on: a BPE merge whose
/// result is not in the vocabulary, or whose second part lacks the continuing-subword prefix
/// (the library slices a buffer sized by the longest token), and a template post-processor
/// that uses a special token it does not define (looked up without a check on every encode).
fn check_document(doc: &Value) -> Result<(), String> {
    let model = &doc["model"];
    if model["type"] == "BPE" {
        let prefix = model["continuing_subword_prefix"].as_str().unwrap_or("");
        if let (Some(vocab), Some(merges)) =
            (model["vocab"].as_object(), model["merges"].as_array())
        {
            for (i, m) in merges.iter().enumerate() {
                let (a, b) = match m {
                    Value::String(s) => match s.split_once(' ') {
                        Some(p) => p,
                        None => continue,
                    },
                    Value::Array(p) => match (
                        p.first().and_then(Value::as_str),
                        p.get(1).and_then(Value::as_str),
                    ) {
                        (Some(a), Some(b)) => (a, b),
                        _ => continue,
                    },
                    _ => continue,
                };
                if !(vocab.contains_key(a) && vocab.contains_key(b)) {
                    continue; // the library reports a part missing from the vocabulary
                }
                let merged = b
                    .strip_prefix(prefix)
                    .map(|rest| format!("{a}{rest}"))
                    .filter(|t| vocab.contains_key(t));
                if merged.is_none() {
                    return Err(format!(
                        "field `model.merges[{i}]`: merging {a:?} and {b:?} does not give a token of `model.vocab`"
                    ));
                }
            }
        }
    }
    // the library only looks the unknown token up when it first needs it, mid-encode
    if let (Some(unk), Some(vocab)) = (model["unk_token"].as_str(), model["vocab"].as_object()) {
        if !vocab.contains_key(unk) {
            return Err(format!(
                "field `model.unk_token`: {unk:?} is not in `model.vocab`"
            ));
        }
    }
    check_post_processor(&doc["post_processor"], "post_processor")?;
    check_decoder(&doc["decoder"], "decoder")
}

/// A `Strip` decoder that strips from the end indexes before the start of a token made only
/// of the stripped character (the library panics); real tokenizers strip from the start only.
fn check_decoder(d: &Value, at: &str) -> Result<(), String> {
    for (i, inner) in d["decoders"].as_array().into_iter().flatten().enumerate() {
        check_decoder(inner, &format!("{at}.decoders[{i}]"))?;
    }
    if d.get("start").is_some() && d["stop"].as_u64().is_some_and(|n| n > 0) {
        return Err(format!(
            "field `{at}.stop`: stripping from the end of tokens is not supported (only `stop: 0`)"
        ));
    }
    Ok(())
}

/// The library picks the post-processor by its shape, not its `type`, so every object with
/// a `single` or `pair` template is checked.
fn check_post_processor(p: &Value, at: &str) -> Result<(), String> {
    for (i, inner) in p["processors"].as_array().into_iter().flatten().enumerate() {
        check_post_processor(inner, &format!("{at}.processors[{i}]"))?;
    }
    let defined = p["special_tokens"].as_object();
    for part in ["single", "pair"] {
        for piece in p[part].as_array().into_iter().flatten() {
            let Some(id) = piece["SpecialToken"]["id"].as_str() else {
                continue;
            };
            if !defined.is_some_and(|d| d.contains_key(id)) {
                return Err(format!(
                    "field `{at}.{part}`: special token {id:?} is not defined in `{at}.special_tokens`"
                ));
            }
        }
    }
    Ok(())
}

fn md_str<'a>(content: &'a gguf_file::Content, key: &str) -> Option<&'a String> {
    content.metadata.get(key).and_then(|v| v.to_string().ok())
}

fn md_u32(content: &gguf_file::Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

fn md_bool(content: &gguf_file::Content, key: &str) -> Option<bool> {
    content.metadata.get(key).and_then(|v| v.to_bool().ok())
}

fn md_array<'a>(
    path: &Path,
    content: &'a gguf_file::Content,
    key: &str,
) -> Result<&'a Vec<GValue>, FileError> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_vec().ok())
        .ok_or_else(|| {
            FileError::new(
                path,
                format!("metadata key `{key}` is missing or not an array"),
            )
        })
}

/// The pre-tokenizer llama.cpp applies for a `tokenizer.ggml.pre` value.
fn gpt2_pre_tokenizer(path: &Path, pre: &str) -> Result<Value, FileError> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama3" | "llama-bpe" | "llama-v3" | "smaug-bpe" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        "qwen2" | "deepseek-r1-qwen" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        other => {
            return Err(FileError::new(
                path,
                format!("tokenizer pre-tokenizer `tokenizer.ggml.pre = {other}` is not supported (supported: default, gpt2, smollm, starcoder, llama-bpe, qwen2)"),
            ))
        }
    })
}

fn bos_post_processor(bos: &str, bos_id: u32) -> Value {
    json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}
    })
}

/// Rebuild the tokenizer stored in a GGUF file's metadata.
pub fn tokenizer_from_gguf(
    path: &Path,
    content: &gguf_file::Content,
) -> Result<ModelTokenizer, FileError> {
    let model = md_str(content, "tokenizer.ggml.model").ok_or_else(|| {
        FileError::new(
            path,
            "metadata key `tokenizer.ggml.model` is missing: this GGUF has no tokenizer",
        )
    })?;
    let tokens: Vec<String> = md_array(path, content, "tokenizer.ggml.tokens")?
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            FileError::new(
                path,
                "metadata key `tokenizer.ggml.tokens` holds non-strings",
            )
        })?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|_| {
                FileError::new(
                    path,
                    "metadata key `tokenizer.ggml.token_type` is not an array",
                )
            })?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(FileError::new(
            path,
            format!(
                "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                types.len(),
                tokens.len()
            ),
        ));
    }
    let bos_id = md_u32(content, "tokenizer.ggml.bos_token_id");
    let eos_id = md_u32(content, "tokenizer.ggml.eos_token_id");
    let name_of = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
    let added: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, t))| **t == TOKEN_CONTROL || **t == TOKEN_USER_DEFINED)
        .map(|(id, (tok, t))| {
            json!({"id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": *t == TOKEN_CONTROL})
        })
        .collect();
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let doc = match model.as_str() {
        "gpt2" => {
            let merges: Vec<String> = md_array(path, content, "tokenizer.ggml.merges")?
                .iter()
                .filter_map(|v| v.to_string().ok().cloned())
                .collect();
            let pre = md_str(content, "tokenizer.ggml.pre").map(String::as_str).unwrap_or("default");
            let add_bos = md_bool(content, "tokenizer.ggml.add_bos_token").unwrap_or(false);
            let post = match (add_bos, name_of(bos_id)) {
                (true, Some(bos)) => bos_post_processor(&bos, bos_id.unwrap_or(0)),
                _ => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}),
            };
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": null,
                "pre_tokenizer": gpt2_pre_tokenizer(path, pre)?,
                "post_processor": post,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                          "ignore_merges": false, "vocab": vocab, "merges": merges}
            })
        }
        "llama" => {
            let scores: Vec<f32> = md_array(path, content, "tokenizer.ggml.scores")?
                .iter()
                .map(|v| v.to_f32().unwrap_or(0.0))
                .collect();
            if scores.len() != tokens.len() {
                return Err(FileError::new(path, "tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length"));
            }
            let merges = sentencepiece_merges(&tokens, &scores, &types);
            let add_bos = md_bool(content, "tokenizer.ggml.add_bos_token").unwrap_or(true);
            let add_space = md_bool(content, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
            let unk = name_of(md_u32(content, "tokenizer.ggml.unknown_token_id").or(Some(0)));
            let mut normalizers = vec![];
            if add_space {
                normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
            let post = match (add_bos, name_of(bos_id)) {
                (true, Some(bos)) => bos_post_processor(&bos, bos_id.unwrap_or(1)),
                _ => Value::Null,
            };
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if add_space {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": {"type": "Sequence", "normalizers": normalizers},
                "pre_tokenizer": null,
                "post_processor": post,
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                          "ignore_merges": false, "vocab": vocab, "merges": merges}
            })
        }
        other => {
            return Err(FileError::new(
                path,
                format!("tokenizer type `tokenizer.ggml.model = {other}` is not supported (supported: gpt2, llama)"),
            ))
        }
    };
    let mut tok = ModelTokenizer::from_json(doc, path)
        .map_err(|e| FileError::new(path, format!("`tokenizer.ggml.*` metadata: {}", e.message)))?;
    tok.bos_token = name_of(bos_id);
    tok.eos_token = name_of(eos_id);
    tok.eos_ids = eos_id.into_iter().collect();
    Ok(tok)
}

/// `trim_offsets` only changes character offsets, never ids: leave it out of comparisons.
fn without_offsets(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "trim_offsets")
                .map(|(k, v)| (k.clone(), without_offsets(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_offsets).collect()),
        other => other.clone(),
    }
}

/// The `tokenizer.ggml.*` metadata llama.cpp needs to rebuild this tokenizer, for a GGUF
/// written from an HF folder. Byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM
/// split rules) are described exactly; the token list is padded to `vocab_size` rows as
/// llama.cpp's converter pads it. Anything else is refused with the reason.
pub fn gguf_tokenizer_metadata(
    tok: &ModelTokenizer,
    vocab_size: usize,
    chat_template: Option<&str>,
    source: &Path,
) -> Result<Vec<(String, GValue)>, FileError> {
    let doc = &tok.json;
    let model = &doc["model"];
    if model["type"] != "BPE" || model["byte_fallback"] == true {
        return Err(FileError::new(
            source,
            "only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM style) can be written to GGUF here; \
             for a SentencePiece tokenizer, convert the merged export with llama.cpp's convert_hf_to_gguf.py",
        ));
    }
    match &doc["normalizer"] {
        Value::Null => {}
        n if n["type"] == "NFC" => {}
        other => {
            return Err(FileError::new(
                source,
                format!("tokenizer.json: normalizer {other} has no llama.cpp equivalent"),
            ))
        }
    }
    let pre_doc = without_offsets(&doc["pre_tokenizer"]);
    let pre = ["gpt-2", "smollm", "llama-bpe", "qwen2"]
        .into_iter()
        .find(|name| {
            gpt2_pre_tokenizer(source, name)
                .map(|v| without_offsets(&v) == pre_doc)
                .unwrap_or(false)
        })
        .ok_or_else(|| {
            FileError::new(
                source,
                "tokenizer.json: the pre-tokenizer's split rules are not one llama.cpp names here (gpt-2, smollm, llama-bpe, qwen2)",
            )
        })?;
    let vocab = model["vocab"].as_object().ok_or_else(|| {
        FileError::new(
            source,
            "tokenizer.json: field `model.vocab` is not an object",
        )
    })?;
    let added = doc["added_tokens"].as_array().cloned().unwrap_or_default();
    let max_id = vocab
        .values()
        .filter_map(Value::as_u64)
        .chain(added.iter().filter_map(|a| a["id"].as_u64()))
        .max()
        .unwrap_or(0) as usize;
    if max_id >= vocab_size {
        return Err(FileError::new(
            source,
            format!("the tokenizer has ids up to {max_id} but the model has {vocab_size} embedding rows"),
        ));
    }
    let n = vocab_size;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![1i32; n];
    for (t, id) in vocab {
        if let Some(id) = id.as_u64() {
            tokens[id as usize] = Some(t.clone());
        }
    }
    for a in &added {
        if let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) {
            tokens[id as usize] = Some(content.to_string());
            types[id as usize] = if a["special"] == true {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
        }
    }
    let tokens: Vec<GValue> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            GValue::String(t.unwrap_or_else(|| {
                types[i] = TOKEN_UNUSED;
                format!("[PAD{i}]")
            }))
        })
        .collect();
    let merges: Vec<GValue> = model["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(p) => Some(
                        p.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    _ => None,
                })
                .map(GValue::String)
                .collect()
        })
        .unwrap_or_default();
    let id_of = |name: &Option<String>| name.as_deref().and_then(|n| tok.token_to_id(n));
    // a BOS comes from a TemplateProcessing step, alone or inside a Sequence (Llama 3)
    let post = &doc["post_processor"];
    let steps: Vec<&Value> = match post["type"].as_str() {
        Some("Sequence") => post["processors"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![post],
    };
    let add_bos = steps.iter().any(|p| {
        p["type"] == "TemplateProcessing"
            && p["single"]
                .as_array()
                .and_then(|a| a.first())
                .is_some_and(|f| f.get("SpecialToken").is_some())
    });
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GValue::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), GValue::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), GValue::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            GValue::Array(types.into_iter().map(GValue::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), GValue::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), GValue::Bool(add_bos)),
    ];
    if let Some(id) = id_of(&tok.bos_token) {
        md.push(("tokenizer.ggml.bos_token_id".into(), GValue::U32(id)));
    }
    if let Some(id) = id_of(&tok.eos_token).or(tok.eos_ids.first().copied()) {
        md.push(("tokenizer.ggml.eos_token_id".into(), GValue::U32(id)));
    }
    if let Some(t) = chat_template {
        md.push(("tokenizer.chat_template".into(), GValue::String(t.into())));
    }
    Ok(md)
}

/// SentencePiece BPE keeps scores, not merges: a merge `(a, b)` exists when `a`, `b` and
/// `a+b` are all pieces, ranked by the score of `a+b` (higher merges first).
fn sentencepiece_merges(tokens: &[String], scores: &[f32], types: &[i32]) -> Vec<String> {
    let index: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f32, usize, usize, String)> = vec![];
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] != 1 {
            continue; // only normal pieces are reachable by merging
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(split);
            if let (Some(&ia), Some(&ib)) = (index.get(a), index.get(b)) {
                merges.push((scores[id], ia, ib, format!("{a} {b}")));
            }
        }
    }
    // Highest score first; ties broken by the ids of the parts, as transformers does.
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    merges.into_iter().map(|m| m.3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentencepiece_merges_rank_by_merged_score() {
        let tokens: Vec<String> = ["<unk>", "a", "b", "ab", "c", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, -1.0, -2.0, -0.5, -3.0, -0.1];
        let types = [2, 1, 1, 1, 1, 1];
        assert_eq!(
            sentencepiece_merges(&tokens, &scores, &types),
            vec!["ab c", "a b"]
        );
    }

    fn word_level(extra: Value) -> Value {
        let mut doc = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 2, "ab": 3}, "unk_token": "[UNK]"}
        });
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        doc
    }

    fn refused(doc: Value) -> String {
        let e = ModelTokenizer::from_json(doc, Path::new("tokenizer.json"))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.starts_with("tokenizer.json: field `"), "{e}");
        e
    }

    // Found by whetstone-fuzz: documents the tokenizers library accepts and then panics on
    // (or sizes an allocation by) when encoding.
    #[test]
    fn padding_and_truncation_of_the_document_are_ignored() {
        let doc = word_level(
            json!({"padding": {"strategy": {"Fixed": 1u64 << 40}, "direction": "Right",
            "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[UNK]"},
            "truncation": {"direction": "Right", "max_length": 1, "strategy": "LongestFirst", "stride": 0}}),
        );
        let tok = ModelTokenizer::from_json(doc, Path::new("tokenizer.json")).unwrap();
        assert_eq!(tok.encode("a b a", false).unwrap(), vec![1, 2, 1]);
    }

    #[test]
    fn a_template_using_an_undefined_special_token_is_refused() {
        let e = refused(word_level(json!({"post_processor": {"type": true,
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {}}})));
        assert!(
            e.contains("`post_processor.single`") && e.contains("\"<s>\""),
            "{e}"
        );
    }

    #[test]
    fn bad_merges_unk_token_and_strip_decoder_are_refused() {
        let mut doc = word_level(json!({}));
        doc["model"] = json!({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]});
        let e = refused(doc.clone());
        assert!(e.contains("`model.merges[0]`"), "{e}");
        doc["model"]["continuing_subword_prefix"] = json!("##");
        doc["model"]["vocab"]["ab"] = json!(2);
        assert!(refused(doc).contains("`model.merges[0]`"));
        let e = refused(word_level(
            json!({"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "[UNK]"}}),
        ));
        assert!(e.contains("`model.unk_token`"), "{e}");
        let e = refused(word_level(
            json!({"decoder": {"type": "Sequence", "decoders": [
            {"type": "Strip", "content": " ", "start": 1, "stop": 3}]}}),
        ));
        assert!(e.contains("`decoder.decoders[0].stop`"), "{e}");
    }

    #[test]
    fn unknown_pre_tokenizer_is_a_clear_error() {
        let e = gpt2_pre_tokenizer(Path::new("m.gguf"), "mystery").unwrap_err();
        assert!(
            e.to_string().starts_with("m.gguf: tokenizer pre-tokenizer"),
            "{e}"
        );
    }
}
