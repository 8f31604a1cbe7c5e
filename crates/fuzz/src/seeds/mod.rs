//! Small valid inputs, built in code, that the mutator starts from: GGUF models (written with
//! candle's GGUF writer and the crate's own metadata), safetensors, `config.json` for every
//! family, tokenizer documents of every model type, chat templates, and a dataset file in
//! every layout `whetstone_data::dataset` reads.

use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::path::Path;
use whetstone_formats::gguf_out;
use whetstone_formats::tokenizer::{gguf_tokenizer_metadata, tokenizer_from_gguf};
use whetstone_formats::{ModelConfig, ModelTokenizer};

mod gguf;
use gguf::tensor;
pub use gguf::{gguf_models, GGUF_KEYS, GGUF_TENSOR_NAMES};

/// A GGUF seed kept as its parts, so the mutator can change metadata and tensor names and
/// write it again, as well as poke the bytes.
pub struct GgufSeed {
    pub metadata: Vec<(String, GValue)>,
    pub tensors: Vec<(String, QTensor)>,
}

impl GgufSeed {
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let md: Vec<(&str, &GValue)> = self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = self.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, &md, &ts).ok()?;
        Some(out.into_inner())
    }
}

/// SmolLM2's ChatML template.
pub const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const LLAMA3: &str = "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

const ZEPHYR: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/// Python-flavoured features real templates use: namespaces, macros, filters, methods.
const FEATURES: &str = "{%- set ns = namespace(first=true, n=0) -%}{%- macro turn(m) -%}<{{ m.role | upper }}>{{ m.content.strip() | replace('\\n', ' ') }}{%- endmacro -%}{%- for m in messages if m.role != 'tool' -%}{%- set ns.n = ns.n + 1 -%}{%- if m.content.startswith('#') %}{% continue %}{% endif -%}{{ turn(m) }}{% if loop.last %}{{ messages | length }}:{{ ns.n }}{% endif %}{%- endfor -%}{%- for k, v in {'a': 1}.items() %}{{ k }}={{ v | tojson }}{% endfor -%}{% if add_generation_prompt %}<ASSISTANT>{% endif %}";

pub fn templates() -> Vec<(&'static str, String)> {
    [
        ("chatml.jinja", CHATML),
        ("llama3.jinja", LLAMA3),
        ("mistral.jinja", MISTRAL),
        ("zephyr.jinja", ZEPHYR),
        ("features.jinja", FEATURES),
    ]
    .into_iter()
    .map(|(n, t)| (n, t.to_string()))
    .collect()
}

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the rest are
/// shifted above U+0100.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut shifted = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).unwrap_or('?')
            }
        })
        .collect()
}

/// A byte-level BPE `tokenizer.json` (GPT-2 split rules) with ChatML specials.
pub fn bpe_tokenizer() -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r"];
    for m in merges {
        let id = vocab.len();
        vocab.insert(m.replace(' ', ""), json!(id));
    }
    let n = vocab.len();
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(n, "<|endoftext|>"), special(n + 1, "<|im_start|>"), special(n + 2, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

/// A `{"word": id}` vocabulary, ids in list order.
fn vocab_of(words: &[&str]) -> serde_json::Map<String, Value> {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), json!(i)))
        .collect()
}

fn word_level_tokenizer() -> Value {
    let words = [
        "[UNK]", "<s>", "</s>", "[U]", "[A]", "hi", "yo", "there", "doc",
    ];
    let vocab = vocab_of(&words);
    json!({
        "version": "1.0", "truncation": {"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[UNK]"},
        "added_tokens": [
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": true, "strip_right": true}]},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
}

fn unigram_tokenizer() -> Value {
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true},
        "post_processor": null,
        "decoder": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": false,
                  "vocab": [["<unk>", 0.0], ["\u{2581}", -1.0], ["a", -2.0], ["b", -2.5], ["\u{2581}a", -1.5], ["ab", -1.2], ["c", -3.0]]}
    })
}

fn word_piece_tokenizer() -> Value {
    let words = [
        "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", "##ing", "play",
    ];
    let vocab = vocab_of(&words);
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// `config.json` seeds: the three families, transformers 4 and 5 forms.
pub fn configs() -> Vec<Value> {
    let llama = json!({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 512, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": [2, 3]
    });
    let mut qwen2 = llama.clone();
    qwen2["model_type"] = json!("qwen2");
    qwen2["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    qwen2["use_sliding_window"] = json!(false);
    qwen2["sliding_window"] = json!(4096);
    let mut mistral = llama.clone();
    mistral["model_type"] = json!("mistral");
    mistral["head_dim"] = json!(16);
    mistral["sliding_window"] = json!(4096);
    mistral["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
    let mut v5 = llama.clone();
    v5.as_object_mut().map(|m| m.remove("rope_theta"));
    v5["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 500000.0});
    v5["dtype"] = json!("bfloat16");
    v5["layer_types"] = json!(["full_attention", "full_attention"]);
    let mut qwen3 = llama.clone();
    qwen3["model_type"] = json!("qwen3");
    qwen3["head_dim"] = json!(8);
    qwen3["use_sliding_window"] = json!(true);
    qwen3["sliding_window"] = json!(16);
    qwen3["max_window_layers"] = json!(1);
    let mut smollm3 = llama.clone();
    smollm3["model_type"] = json!("smollm3");
    smollm3["no_rope_layers"] = json!([1, 0]);
    smollm3["attention_dropout"] = json!(0.0);
    let mut gemma2 = llama.clone();
    gemma2["model_type"] = json!("gemma2");
    gemma2["hidden_activation"] = json!("gelu_pytorch_tanh");
    gemma2["query_pre_attn_scalar"] = json!(16);
    gemma2["attn_logit_softcapping"] = json!(50.0);
    gemma2["final_logit_softcapping"] = json!(30.0);
    gemma2["sliding_window"] = json!(8);
    gemma2["layer_types"] = json!(["sliding_attention", "full_attention"]);
    // Gemma 3 in the transformers 5 form: one rope per layer type
    let mut gemma3 = gemma2.clone();
    gemma3["model_type"] = json!("gemma3_text");
    gemma3.as_object_mut().map(|m| m.remove("rope_theta"));
    gemma3["attn_logit_softcapping"] = json!(null);
    gemma3["final_logit_softcapping"] = json!(null);
    gemma3["rope_parameters"] = json!({
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}});
    vec![llama, qwen2, mistral, v5, qwen3, smollm3, gemma2, gemma3]
}

/// Keys the config reader looks at, for the JSON mutator.
pub const CONFIG_KEYS: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rope_type",
    "type",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
    "partial_rotary_factor",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "use_sliding_window",
    "layer_types",
    "sliding_window",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
    "hidden_activation",
    "query_pre_attn_scalar",
    "rope_local_base_freq",
    "sliding_window_pattern",
    "use_bidirectional_attention",
    "max_window_layers",
    "no_rope_layers",
    "no_rope_layer_interval",
    "attention_dropout",
    "full_attention",
    "sliding_attention",
    "llama3",
    "linear",
    "yarn",
];

pub const TOKENIZER_KEYS: &[&str] = &[
    "version",
    "added_tokens",
    "normalizer",
    "pre_tokenizer",
    "post_processor",
    "decoder",
    "model",
    "type",
    "vocab",
    "merges",
    "unk_token",
    "unk_id",
    "byte_fallback",
    "dropout",
    "continuing_subword_prefix",
    "end_of_word_suffix",
    "fuse_unk",
    "ignore_merges",
    "id",
    "content",
    "special",
    "pattern",
    "Regex",
    "String",
    "behavior",
    "single",
    "pair",
    "special_tokens",
    "ids",
    "tokens",
    "SpecialToken",
    "Sequence",
    "truncation",
    "padding",
    "max_length",
    "stride",
    "pad_id",
    "max_input_chars_per_word",
    "BPE",
    "WordLevel",
    "Unigram",
    "WordPiece",
    "ByteLevel",
    "Split",
    "Metaspace",
    "TemplateProcessing",
    "pretokenizers",
    "normalizers",
    "decoders",
    "processors",
    "prepend_scheme",
    "replacement",
];

pub fn tokenizers() -> Vec<Value> {
    let mut out = vec![
        bpe_tokenizer(),
        word_level_tokenizer(),
        unigram_tokenizer(),
        word_piece_tokenizer(),
    ];
    // the documents Whetstone itself writes from GGUF vocabularies (both kinds)
    for seed in gguf_models() {
        let Some(bytes) = seed.to_bytes() else {
            continue;
        };
        let mut cur = std::io::Cursor::new(bytes);
        if let Ok(content) = gguf_file::Content::read(&mut cur) {
            if let Ok(t) = tokenizer_from_gguf(Path::new("seed.gguf"), &content) {
                out.push(t.json);
            }
        }
    }
    out
}

/// A small safetensors file of every float dtype the loader takes (and one it refuses).
pub fn safetensors_files() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut out = vec![];
    let sets: Vec<Vec<(String, Tensor)>> = vec![
        vec![
            ("model.embed_tokens.weight".into(), tensor(&[4, 8], 0.0)),
            (
                "model.norm.weight".into(),
                tensor(&[8], 1.0).to_dtype(DType::F16).expect("f16"),
            ),
            (
                "lm_head.weight".into(),
                tensor(&[4, 8], 2.0).to_dtype(DType::BF16).expect("bf16"),
            ),
        ],
        vec![
            ("a".into(), tensor(&[2, 3, 4], 3.0)),
            (
                "ids".into(),
                Tensor::new(&[1i64, 2, 3], &Device::Cpu).expect("i64"),
            ),
            (
                "scalar".into(),
                Tensor::new(1f32, &Device::Cpu).expect("scalar"),
            ),
        ],
    ];
    for (k, set) in sets.into_iter().enumerate() {
        let p = dir.path().join(format!("{k}.safetensors"));
        if whetstone_formats::weights::save_safetensors(&p, &set).is_ok() {
            if let Ok(b) = std::fs::read(&p) {
                out.push(b);
            }
        }
    }
    out
}

pub const SAFETENSORS_KEYS: &[&str] = &[
    "dtype",
    "shape",
    "data_offsets",
    "__metadata__",
    "format",
    "F32",
    "F16",
    "BF16",
    "I64",
    "U8",
    "BOOL",
    "F8_E4M3",
    "F64",
    "I32",
    "U64",
    "model.embed_tokens.weight",
];

/// Dataset files in every layout the dataset reader detects, by file name.
pub fn datasets() -> Vec<(&'static str, String)> {
    vec![
        (
            "alpaca.json",
            r#"[{"instruction": "Say hi", "input": "", "output": "hi"},
 {"instruction": "Add", "input": "1 + 2", "output": "3", "system": "Be brief.", "history": [["q", "a"]]}]"#
                .into(),
        ),
        (
            "alpaca.jsonl",
            "{\"instruction\": \"Name a colour\", \"output\": \"red\"}\n\n{\"instruction\": \"Echo\", \"input\": \"x\\ny\", \"output\": \"x\\ny\", \"history\": []}\n".into(),
        ),
        (
            "chat.jsonl",
            "{\"messages\": [{\"role\": \"system\", \"content\": \"Be kind.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}, {\"role\": \"user\", \"content\": \"and 3+3?\"}, {\"role\": \"assistant\", \"content\": \"6\"}]}\n".into(),
        ),
        (
            "sharegpt.jsonl",
            "{\"system\": \"sys\", \"conversations\": [{\"from\": \"human\", \"value\": \"hey\"}, {\"from\": \"gpt\", \"value\": \"hello\"}]}\n".into(),
        ),
        (
            "text.jsonl",
            "{\"text\": \"The first document.\"}\n{\"text\": \"The second one, with \\u00e9 and \\ud83d\\ude00.\"}\n".into(),
        ),
        ("notes.txt", "First line of text.\n\n  second line  \r\nthird\n".into()),
        (
            "pairs.csv",
            "prompt,response,system\n\"What is 2+2?\",4,\n\"Quote \"\"this\"\"\",\"multi\nline\",be brief\r\nplain,answer,\n".into(),
        ),
        ("pairs.tsv", "question\tanswer\nWhy?\tBecause.\n\"tab\there\"\tok\n".into()),
        ("docs.csv", "text\n\"a document\"\n\"another, with a comma\"\n".into()),
    ]
}

pub const DATASET_KEYS: &[&str] = &[
    "instruction",
    "input",
    "output",
    "system",
    "history",
    "messages",
    "role",
    "content",
    "conversations",
    "from",
    "value",
    "text",
    "user",
    "assistant",
    "human",
    "gpt",
    "tool",
];

/// Tokens worth inserting into Jinja templates: syntax, loops, filters, big numbers.
pub const JINJA_DICT: &[&[u8]] = &[
    b"{%",
    b"%}",
    b"{{",
    b"}}",
    b"{#",
    b"#}",
    b"{%-",
    b"-%}",
    b"{% for m in messages %}",
    b"{% endfor %}",
    b"{% if %}",
    b"{% endif %}",
    b"{% set x = ",
    b"{% macro f(a) %}{{ f(a) }}",
    b"{% endmacro %}",
    b"{{ f(1) }}",
    b"{% for i in range(99999) %}",
    b"range(100001)",
    // not `[] * 9223372036854775807`: minijinja repeats an empty list without spending
    // fuel, which loops for ages (a known upstream issue, see docs/TESTING.md)
    b" * 999999",
    b"|join(messages)",
    b"|tojson",
    b"|safe",
    b"|int",
    b"|length",
    b"|selectattr('role')",
    b"|replace('', 'x')",
    b"|indent(999999)",
    b"messages[99999999999]",
    b"messages[-1]",
    b"[:-1]",
    b".items()",
    b".strip()",
    b".split()",
    b"loop.index",
    b"namespace(",
    b"raise_exception('x')",
    b"raise_exception('two\nlines')",
    b"strftime_now('%Y')",
    b"{% break %}",
    b"{% continue %}",
    b"((((((((((((((((((((",
    b"))))))))))))))))))))",
    b"9999999999999999999999",
    b"1e400",
    b"'\\u",
    b"\"",
    b"'",
    b"{% raw %}",
    b"{% endraw %}",
    b"{% include 'chat' %}",
    b"{% extends 'chat' %}",
    b"{% call f(1) %}",
    b"{% filter upper %}",
];

/// Tokens for text formats: separators, quotes, line ends, a byte-order mark.
pub const TEXT_DICT: &[&[u8]] = &[
    b"\"",
    b",",
    b"\t",
    b"\n",
    b"\r\n",
    b"\r",
    b"\"\"",
    b"\xef\xbb\xbf",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"null",
    b"true",
    b"1e400",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"{\"messages\": []}",
    b"{\"text\": 1}",
    b"{\"conversations\": [{\"from\": \"x\"}]}",
];

#[cfg(test)]
mod tests {
    use super::*;
    use whetstone_formats::weights;

    /// The model seeds are valid files: a mutant's rejection then means the mutation.
    #[test]
    fn every_gguf_model_seed_is_read_as_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let seeds = gguf_models();
        // the last seed is the adapter, which is not a model
        for (i, seed) in seeds[..seeds.len() - 1].iter().enumerate() {
            let path = dir.path().join(format!("seed{i}.gguf"));
            std::fs::write(&path, seed.to_bytes().unwrap()).unwrap();
            let content = weights::read_gguf(&path).unwrap();
            let rope = weights::gguf_rope_factors(&path, &content).unwrap();
            let cfg = ModelConfig::from_gguf(&path, &content, rope)
                .unwrap_or_else(|e| panic!("seed {i}: {e}"));
            tokenizer_from_gguf(&path, &content).unwrap_or_else(|e| panic!("seed {i}: {e}"));
            if cfg.family == whetstone_formats::Family::Phi3 {
                assert!(cfg.fused_projections && cfg.rotary_dim == 4);
                assert!(matches!(
                    cfg.rope_scaling,
                    Some(whetstone_formats::RopeScaling::LongRope { .. })
                ));
            }
        }
    }
}
