//! What is fuzzed: each target owns its seeds, its mutator and the real public readers it
//! calls on a case's file. A reader that returns an error hands back a [`Rejection`]; the
//! driver checks that it is one line, names the file and (where the reader knows which
//! field is wrong) names the field.

use crate::mutate::{mutate_bytes, mutate_json, poke_length, Rng};
use crate::seeds::{self, GgufSeed};
use candle_core::quantized::gguf_file::Value as GValue;
use candle_core::{DType, Device};
use serde_json::Value;
use std::path::Path;
use whetstone_data::{dataset, tokenize_example, ChatMessage, ChatTemplate, CsvColumns, Example};
use whetstone_formats::{gguf, tokenizer, weights, ModelConfig, ModelSource, ModelTokenizer};

mod gguf_target;
use gguf_target::GgufTarget;

/// An error a reader returned for a case.
pub struct Rejection {
    pub reader: &'static str,
    pub message: String,
    /// The reader knows which field is wrong, so the message must name it.
    pub must_name_field: bool,
}

impl Rejection {
    fn new(reader: &'static str, message: impl ToString, must_name_field: bool) -> Self {
        Self {
            reader,
            message: message.to_string(),
            must_name_field,
        }
    }
}

/// One seed input: the file name it is written under (the readers look at extensions) and
/// its bytes.
pub struct Input {
    pub file: String,
    pub bytes: Vec<u8>,
}

pub trait Target: Send + Sync {
    fn name(&self) -> &'static str;
    fn inputs(&self) -> &[Input];
    /// A mutated copy of seed `i`.
    fn mutate(&self, rng: &mut Rng, i: usize) -> Vec<u8>;
    /// Call the readers on the file at `path`; every error they return.
    fn run(&self, path: &Path) -> Vec<Rejection>;
    /// The largest single allocation a case of `len` bytes may make.
    fn allowance(&self, len: usize) -> usize {
        (64 * len).max(16 << 20)
    }
}

/// Does the message (after the file's path) name a field: a `quoted` name or a dotted key
/// such as `tokenizer.ggml.tokens`?
pub fn names_field(message: &str, path: &Path) -> bool {
    let rest = message.replace(&path.display().to_string(), "");
    rest.contains('`')
        || rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .any(|w| {
                let parts: Vec<&str> = w.split('.').collect();
                parts.len() >= 2
                    && parts
                        .iter()
                        .all(|p| p.starts_with(|c: char| c.is_ascii_alphabetic()))
            })
}

fn others(inputs: &[Input], i: usize) -> Vec<&[u8]> {
    inputs
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != i)
        .map(|(_, s)| s.bytes.as_slice())
        .collect()
}

/// Seeds given as (file name, text).
fn text_inputs(items: Vec<(&str, String)>) -> Vec<Input> {
    items
        .into_iter()
        .map(|(file, text)| Input {
            file: file.into(),
            bytes: text.into_bytes(),
        })
        .collect()
}

fn dict(words: &[&'static str]) -> Vec<&'static [u8]> {
    words.iter().map(|w| w.as_bytes()).collect()
}

/// A few conversations every template is rendered with.
fn conversations() -> Vec<Vec<ChatMessage>> {
    vec![
        vec![
            ChatMessage::new("user", "Hi there"),
            ChatMessage::new("assistant", "Hello!"),
        ],
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "2+2?"),
            ChatMessage::new("assistant", "4"),
            ChatMessage::new("user", "and\n3+3?"),
            ChatMessage::new("assistant", "6 {{ not a tag }}"),
        ],
        vec![],
    ]
}

/// Encode and decode a few strings with a tokenizer; errors are wrapped the way callers
/// report them (with the file).
fn exercise_tokenizer(tok: &ModelTokenizer, path: &Path, out: &mut Vec<Rejection>) {
    for text in [
        "Hello world",
        "",
        " \n\t<|im_start|>user\nHi<|im_end|> [INST] é 😀 \u{0}",
    ] {
        for special in [true, false] {
            match tok.encode(text, special) {
                Ok(ids) => {
                    if let Err(e) = tok.decode(&ids, !special) {
                        out.push(Rejection::new(
                            "tokenizer decode",
                            format!("{}: cannot decode: {e}", path.display()),
                            false,
                        ));
                    }
                }
                Err(e) => out.push(Rejection::new(
                    "tokenizer encode",
                    format!("{}: cannot encode: {e}", path.display()),
                    false,
                )),
            }
        }
    }
    let _ = tok.decode(&[0, 1, u32::MAX], false);
    if let Err(e) = tok.check_fits(tok.vocab_size(), path) {
        out.push(Rejection::new("check_fits", e, false));
    }
}

// ---------------------------------------------------------------------------------------
// GGUF

pub struct SafetensorsTarget {
    inputs: Vec<Input>,
}

impl SafetensorsTarget {
    pub fn new() -> Self {
        Self {
            inputs: seeds::safetensors_files()
                .into_iter()
                .map(|bytes| Input {
                    file: "model.safetensors".into(),
                    bytes,
                })
                .collect(),
        }
    }
}

impl Target for SafetensorsTarget {
    fn name(&self) -> &'static str {
        "safetensors"
    }

    fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    fn mutate(&self, rng: &mut Rng, i: usize) -> Vec<u8> {
        let seed = &self.inputs[i].bytes;
        let keys = dict(seeds::SAFETENSORS_KEYS);
        let others = others(&self.inputs, i);
        match rng.below(3) {
            0 => {
                // the header as JSON, re-prefixed with its new length
                let n = u64::from_le_bytes(seed[..8].try_into().unwrap_or([0; 8])) as usize;
                let header: Value = serde_json::from_slice(&seed[8..8 + n]).unwrap_or(Value::Null);
                let new = mutate_json(rng, &header, seeds::SAFETENSORS_KEYS);
                let mut bytes = (new.len() as u64).to_le_bytes().to_vec();
                bytes.extend_from_slice(&new);
                bytes.extend_from_slice(&seed[8 + n..]);
                if rng.one_in(4) {
                    poke_length(rng, &mut bytes, 0, 8);
                }
                bytes
            }
            1 => {
                let mut bytes = seed.clone();
                poke_length(rng, &mut bytes, 0, 8);
                bytes
            }
            _ => {
                let mut bytes = seed.clone();
                mutate_bytes(rng, &mut bytes, &keys, &others);
                bytes
            }
        }
    }

    fn run(&self, path: &Path) -> Vec<Rejection> {
        let dir = path.parent().unwrap_or(Path::new("."));
        match weights::load_safetensors(dir, &Device::Cpu, DType::F32, &mut weights::keep_all) {
            Ok(_) => vec![],
            Err(e) => vec![Rejection::new("load_safetensors", e, false)],
        }
    }
}

// ---------------------------------------------------------------------------------------
// JSON documents: config.json and tokenizer.json

pub struct JsonTarget {
    name: &'static str,
    docs: Vec<Value>,
    inputs: Vec<Input>,
    keys: &'static [&'static str],
    reader: fn(&Path) -> Vec<Rejection>,
}

impl JsonTarget {
    fn new(
        name: &'static str,
        file: &str,
        docs: Vec<Value>,
        keys: &'static [&'static str],
        reader: fn(&Path) -> Vec<Rejection>,
    ) -> Self {
        let inputs = docs
            .iter()
            .map(|d| Input {
                file: file.into(),
                bytes: serde_json::to_vec_pretty(d).unwrap_or_default(),
            })
            .collect();
        Self {
            name,
            docs,
            inputs,
            keys,
            reader,
        }
    }

    pub fn config() -> Self {
        Self::new(
            "config.json",
            "config.json",
            seeds::configs(),
            seeds::CONFIG_KEYS,
            |path| {
                match ModelConfig::from_hf_json(path) {
                    Ok(_) => vec![],
                    Err(e) => {
                        // past JSON syntax, the reader knows the field it refuses
                        let syntax = e.message.starts_with("not valid JSON")
                            || e.message.starts_with("cannot read");
                        vec![Rejection::new("ModelConfig::from_hf_json", e, !syntax)]
                    }
                }
            },
        )
    }

    pub fn tokenizer() -> Self {
        Self::new(
            "tokenizer.json",
            "tokenizer.json",
            seeds::tokenizers(),
            seeds::TOKENIZER_KEYS,
            |path| {
                let mut out = vec![];
                match ModelTokenizer::from_file(path) {
                    Ok(tok) => exercise_tokenizer(&tok, path, &mut out),
                    Err(e) => out.push(Rejection::new("ModelTokenizer::from_file", e, false)),
                }
                out
            },
        )
    }
}

impl Target for JsonTarget {
    fn name(&self) -> &'static str {
        self.name
    }

    fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    fn mutate(&self, rng: &mut Rng, i: usize) -> Vec<u8> {
        if rng.one_in(4) {
            let mut bytes = self.inputs[i].bytes.clone();
            mutate_bytes(rng, &mut bytes, &dict(self.keys), &others(&self.inputs, i));
            bytes
        } else {
            mutate_json(rng, &self.docs[i], self.keys)
        }
    }

    fn run(&self, path: &Path) -> Vec<Rejection> {
        (self.reader)(path)
    }
}

// ---------------------------------------------------------------------------------------
// chat templates

/// The tokenizer conversations are tokenized with in the template and dataset targets.
fn fixed_tokenizer() -> tokenizers::Tokenizer {
    ModelTokenizer::from_json(seeds::bpe_tokenizer(), Path::new("seed/tokenizer.json"))
        .expect("seed tokenizer is valid")
        .inner
}

pub struct TemplateTarget {
    inputs: Vec<Input>,
    tokenizer: tokenizers::Tokenizer,
}

impl TemplateTarget {
    pub fn new() -> Self {
        Self {
            inputs: text_inputs(seeds::templates()),
            tokenizer: fixed_tokenizer(),
        }
    }
}

impl Target for TemplateTarget {
    fn name(&self) -> &'static str {
        "chat template"
    }

    fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    fn mutate(&self, rng: &mut Rng, i: usize) -> Vec<u8> {
        let mut bytes = self.inputs[i].bytes.clone();
        for _ in 0..1 + rng.below(3) {
            mutate_bytes(rng, &mut bytes, seeds::JINJA_DICT, &others(&self.inputs, i));
        }
        bytes
    }

    /// A template is a program: minijinja lets one expression build a string of up to
    /// 10^8 bytes (`'a' * 99999999`, its own cap) or widen every line (`indent(999999)`)
    /// before any output is written, and Whetstone cannot bound that from outside. The
    /// render's output is capped (1 MiB + 8× the messages) and its instructions are fueled;
    /// one such transient value is allowed, anything beyond it is a finding.
    fn allowance(&self, len: usize) -> usize {
        (64 * len).max(128 << 20)
    }

    fn run(&self, path: &Path) -> Vec<Rejection> {
        // as ModelSource reads `chat_template.jinja`, and callers report template errors
        let wrap = |e: &dyn std::fmt::Display| format!("{}: chat template: {e}", path.display());
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => return vec![Rejection::new("read chat template", wrap(&e), false)],
        };
        let tpl = match ChatTemplate::new(&source, "<|im_start|>", "<|im_end|>") {
            Ok(t) => t,
            Err(e) => return vec![Rejection::new("ChatTemplate::new", wrap(&e), false)],
        };
        let mut out = vec![];
        for messages in conversations() {
            for gen in [false, true] {
                if let Err(e) = tpl.render(&messages, gen) {
                    out.push(Rejection::new("ChatTemplate::render", wrap(&e), false));
                }
            }
            let ex = Example::Chat { messages };
            for all in [false, true] {
                if let Err(e) = tokenize_example(&ex, Some(&tpl), &self.tokenizer, Some(0), all) {
                    out.push(Rejection::new("tokenize_example", wrap(&e), false));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// datasets

pub struct DatasetTarget {
    inputs: Vec<Input>,
    template: ChatTemplate,
    tokenizer: tokenizers::Tokenizer,
}

impl DatasetTarget {
    pub fn new() -> Self {
        Self {
            inputs: text_inputs(seeds::datasets()),
            template: ChatTemplate::new(seeds::CHATML, "<|im_start|>", "<|im_end|>")
                .expect("ChatML compiles"),
            tokenizer: fixed_tokenizer(),
        }
    }
}

impl Target for DatasetTarget {
    fn name(&self) -> &'static str {
        "dataset"
    }

    fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    fn mutate(&self, rng: &mut Rng, i: usize) -> Vec<u8> {
        let seed = &self.inputs[i];
        let text = String::from_utf8_lossy(&seed.bytes);
        let json_file = seed.file.ends_with(".json") || seed.file.ends_with(".jsonl");
        if json_file && rng.one_in(2) {
            if seed.file.ends_with(".json") {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    return mutate_json(rng, &v, seeds::DATASET_KEYS);
                }
            } else {
                let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
                let k = rng.below(lines.len());
                if let Ok(v) = serde_json::from_slice::<Value>(&lines[k]) {
                    lines[k] = mutate_json(rng, &v, seeds::DATASET_KEYS);
                }
                return lines.join(&b'\n');
            }
        }
        let mut bytes = seed.bytes.clone();
        let mut dict: Vec<&[u8]> = seeds::TEXT_DICT.to_vec();
        dict.extend(seeds::DATASET_KEYS.iter().map(|k| k.as_bytes()));
        mutate_bytes(rng, &mut bytes, &dict, &others(&self.inputs, i));
        bytes
    }

    fn run(&self, path: &Path) -> Vec<Rejection> {
        let mut out = vec![];
        let formats = [
            dataset::DatasetFormat::Alpaca,
            dataset::DatasetFormat::Chat,
            dataset::DatasetFormat::Sharegpt,
            dataset::DatasetFormat::Text,
            dataset::DatasetFormat::Csv,
        ];
        let columns = CsvColumns {
            prompt: Some("prompt".into()),
            response: Some("response".into()),
            system: Some("system".into()),
            text: None,
        };
        let mut loaded = None;
        let calls: Vec<(Option<dataset::DatasetFormat>, Option<CsvColumns>, bool)> = vec![
            (None, None, false),
            (None, None, true),
            (None, Some(columns), true),
        ]
        .into_iter()
        .chain(formats.iter().map(|f| (Some(*f), None, true)))
        .collect();
        for (format, cols, drop_invalid) in calls {
            match dataset::load(path, format, cols, drop_invalid) {
                Ok(d) => {
                    loaded.get_or_insert(d);
                }
                Err(e) => out.push(Rejection::new("dataset::load", e, false)),
            }
        }
        if let Some(d) = loaded {
            for (at, ex) in d.examples.iter().take(16) {
                for all in [false, true] {
                    if let Err(e) =
                        tokenize_example(ex, Some(&self.template), &self.tokenizer, Some(0), all)
                    {
                        out.push(Rejection::new(
                            "tokenize_example",
                            format!("{}: {at}: {e}", path.display()),
                            false,
                        ));
                    }
                }
            }
        }
        out
    }
}

pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(GgufTarget::new()),
        Box::new(SafetensorsTarget::new()),
        Box::new(JsonTarget::config()),
        Box::new(JsonTarget::tokenizer()),
        Box::new(TemplateTarget::new()),
        Box::new(DatasetTarget::new()),
    ]
}
