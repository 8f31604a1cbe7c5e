//! From an example to token ids plus a loss mask.
//!
//! Conversations go through the model's chat template. By default only the assistant turns
//! are learned (their content and the end-of-turn marker the template puts after them); the
//! spans are found by rendering each prefix of the conversation and must agree with the
//! full rendering, else the template is reported instead of silently training on the wrong
//! tokens. Plain documents learn every token and end with the EOS token.

use crate::dataset::Example;
use crate::template::{one_line, ChatTemplate};
use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    /// `true` where the token is a target of the loss.
    pub trained: Vec<bool>,
    /// Preference data: the dispreferred answer of a pair (DPO, ORPO), or for KTO the
    /// mismatched sequence its KL reference point is estimated from (set by the trainer).
    /// Same layout: the prompt, then the answer's trained tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<Box<Tokenized>>,
    /// KTO: whether this answer is desirable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desirable: Option<bool>,
    /// The reference model's log-probabilities of this sequence's trained tokens and of
    /// `pair`'s (set by the trainer for objectives that compare with a reference).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<f64>,
}

impl Tokenized {
    pub fn trained_count(&self) -> usize {
        self.trained.iter().filter(|&&t| t).count()
    }

    pub fn new(ids: Vec<u32>, trained: Vec<bool>) -> Self {
        Self {
            ids,
            trained,
            ..Default::default()
        }
    }

    /// The longest sequence of this row and its pair, in tokens.
    pub fn max_len(&self) -> usize {
        self.ids
            .len()
            .max(self.pair.as_ref().map_or(0, |p| p.ids.len()))
    }

    /// Cut this row and its pair to at most `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        self.ids.truncate(n);
        self.trained.truncate(n);
        if let Some(p) = &mut self.pair {
            p.truncate(n);
        }
    }

    /// Whether every sequence (this and its pair) has a token to learn after the first.
    pub fn has_targets(&self) -> bool {
        let any = |t: &Tokenized| t.trained.iter().skip(1).any(|&x| x);
        any(self) && self.pair.as_deref().is_none_or(any)
    }
}

/// Byte spans of the text that are learned.
fn assistant_spans(
    template: &ChatTemplate,
    messages: &[crate::ChatMessage],
) -> Result<(String, Vec<(usize, usize)>), String> {
    let full = template
        .render(messages, false)
        .map_err(|e| e.to_string())?;
    let mut spans = vec![];
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let prefix = template
            .render(&messages[..i], true)
            .map_err(|e| e.to_string())?;
        let upto = template
            .render(&messages[..=i], false)
            .map_err(|e| e.to_string())?;
        if !upto.starts_with(&prefix) || !full.starts_with(&upto) {
            return Err(
                "the chat template renders a conversation differently from its own prefixes, so the assistant turns cannot be located; train on the whole text (train_on_prompt) or use another template"
                    .into(),
            );
        }
        spans.push((prefix.len(), upto.len()));
    }
    Ok((full, spans))
}

/// Tokenize one example. `template` is required for conversations; `eos` ends documents.
pub fn tokenize_example(
    example: &Example,
    template: Option<&ChatTemplate>,
    tokenizer: &tokenizers::Tokenizer,
    eos: Option<u32>,
    train_on_prompt: bool,
) -> Result<Tokenized, String> {
    match example {
        Example::Text { text } => {
            let enc = tokenizer
                .encode(text.as_str(), true)
                .map_err(|e| one_line(&e.to_string()))?;
            let mut ids = enc.get_ids().to_vec();
            if let Some(e) = eos {
                ids.push(e);
            }
            let trained = vec![true; ids.len()];
            Ok(Tokenized::new(ids, trained))
        }
        Example::Chat { messages } => {
            let template = template
                .ok_or("the model has no chat template, so conversations cannot be rendered")?;
            let (full, spans) = assistant_spans(template, messages)?;
            // The template writes the special tokens itself (as apply_chat_template does).
            let enc = tokenizer
                .encode(full.as_str(), false)
                .map_err(|e| one_line(&e.to_string()))?;
            let ids = enc.get_ids().to_vec();
            let trained = if train_on_prompt {
                vec![true; ids.len()]
            } else {
                enc.get_offsets()
                    .iter()
                    .map(|&(start, end)| {
                        end > start && spans.iter().any(|&(s, e)| start >= s && start < e)
                    })
                    .collect()
            };
            Ok(Tokenized::new(ids, trained))
        }
        Example::Pair {
            prompt,
            chosen,
            rejected,
        } => {
            let mut t = prompt_answer(prompt, chosen, template, tokenizer, eos)?;
            t.pair = Some(Box::new(prompt_answer(
                prompt, rejected, template, tokenizer, eos,
            )?));
            Ok(t)
        }
        Example::Rated {
            prompt,
            completion,
            desirable,
        } => {
            let mut t = prompt_answer(prompt, completion, template, tokenizer, eos)?;
            t.desirable = Some(*desirable);
            Ok(t)
        }
    }
}

/// A prompt and one answer to it, only the answer trained: through the chat template when
/// the model has one (the answer is everything after the prompt rendered with its
/// generation prompt), else as plain text — the prompt, the answer and EOS — with the answer
/// starting where the tokens of the prompt alone and of the whole text part (as TRL splits
/// its standard format).
fn prompt_answer(
    prompt: &[crate::ChatMessage],
    answer: &[crate::ChatMessage],
    template: Option<&ChatTemplate>,
    tokenizer: &tokenizers::Tokenizer,
    eos: Option<u32>,
) -> Result<Tokenized, String> {
    let encode = |text: &str, special: bool| {
        tokenizer
            .encode(text, special)
            .map_err(|e| one_line(&e.to_string()))
    };
    if let Some(t) = template {
        let all: Vec<_> = prompt.iter().chain(answer).cloned().collect();
        let head = t.render(prompt, true).map_err(|e| e.to_string())?;
        let full = t.render(&all, false).map_err(|e| e.to_string())?;
        if !full.starts_with(&head) {
            return Err("the chat template renders the prompt (with its generation prompt) differently from the start of the whole conversation, so the answer cannot be located".into());
        }
        let enc = encode(&full, false)?;
        let trained = enc
            .get_offsets()
            .iter()
            .map(|&(start, end)| end > start && start >= head.len())
            .collect();
        return Ok(Tokenized::new(enc.get_ids().to_vec(), trained));
    }
    let ([p], [a]) = (prompt, answer) else {
        return Err(
            "the model has no chat template, so only one-turn string prompts and answers can be rendered (as plain text)".into(),
        );
    };
    let (p, a) = (&p.content, &a.content);
    let head = encode(p, true)?.get_ids().to_vec();
    let mut ids = encode(&format!("{p}{a}"), true)?.get_ids().to_vec();
    ids.extend(eos);
    let start = head.iter().zip(&ids).take_while(|(x, y)| x == y).count();
    let trained = (0..ids.len()).map(|i| i >= start).collect();
    Ok(Tokenized::new(ids, trained))
}

/// Token-length statistics of a dataset: count, min/mean/max and how many exceed `seq_len`.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct LengthStats {
    pub records: usize,
    pub min_tokens: usize,
    pub mean_tokens: f64,
    pub max_tokens: usize,
    pub over_seq_len: usize,
    pub seq_len: usize,
    /// Histogram over `[i * bin, (i + 1) * bin)` tokens.
    pub bin: usize,
    pub histogram: Vec<usize>,
    pub trained_tokens: usize,
}

pub fn length_stats(lengths: &[(usize, usize)], seq_len: usize) -> LengthStats {
    let n = lengths.len();
    let max = lengths.iter().map(|l| l.0).max().unwrap_or(0);
    let bin = (max / 10 + 1).next_power_of_two().max(8);
    let mut histogram = vec![0; max / bin + 1];
    for (l, _) in lengths {
        histogram[l / bin] += 1;
    }
    LengthStats {
        records: n,
        min_tokens: lengths.iter().map(|l| l.0).min().unwrap_or(0),
        mean_tokens: if n > 0 {
            lengths.iter().map(|l| l.0).sum::<usize>() as f64 / n as f64
        } else {
            0.0
        },
        max_tokens: max,
        over_seq_len: lengths.iter().filter(|l| l.0 > seq_len).count(),
        seq_len,
        bin,
        histogram,
        trained_tokens: lengths.iter().map(|l| l.1).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChatMessage;

    fn tokenizer() -> tokenizers::Tokenizer {
        // A word-level tokenizer over the few words the tests use, with two special tokens.
        let vocab: Vec<&str> = vec![
            "<s>", "</s>", "[U]", "[A]", "hi", "there", "yo", "doc", "[UNK]",
        ];
        let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
            .collect();
        let doc = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [
                {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "[U]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 3, "content": "[A]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab_json, "unk_token": "[UNK]"}
        });
        doc.to_string().parse().unwrap()
    }

    #[test]
    fn only_assistant_turns_and_their_end_marker_are_trained() {
        let tpl = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'user' %}[U] {{ m.content }} {% else %}[A] {{ m.content }} </s> {% endif %}{% endfor %}{% if add_generation_prompt %}[A] {% endif %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let ex = Example::Chat {
            messages: vec![
                ChatMessage::new("user", "hi"),
                ChatMessage::new("assistant", "yo"),
                ChatMessage::new("user", "there"),
                ChatMessage::new("assistant", "hi there"),
            ],
        };
        let t = tokenize_example(&ex, Some(&tpl), &tokenizer(), Some(1), false).unwrap();
        // [U] hi [A] yo </s> [U] there [A] hi there </s>
        assert_eq!(t.ids, vec![2, 4, 3, 6, 1, 2, 5, 3, 4, 5, 1]);
        assert_eq!(
            t.trained,
            vec![false, false, false, true, true, false, false, false, true, true, true]
        );
        let all = tokenize_example(&ex, Some(&tpl), &tokenizer(), Some(1), true).unwrap();
        assert!(all.trained.iter().all(|&x| x));
    }

    #[test]
    fn a_pair_trains_only_the_answers_after_its_prompt() {
        let tpl = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'user' %}[U] {{ m.content }} {% else %}[A] {{ m.content }} </s> {% endif %}{% endfor %}{% if add_generation_prompt %}[A] {% endif %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let prompt = vec![
            ChatMessage::new("user", "hi"),
            ChatMessage::new("assistant", "yo"),
            ChatMessage::new("user", "there"),
        ];
        let ex = Example::Pair {
            prompt: prompt.clone(),
            chosen: vec![ChatMessage::new("assistant", "hi there")],
            rejected: vec![ChatMessage::new("assistant", "doc")],
        };
        let t = tokenize_example(&ex, Some(&tpl), &tokenizer(), Some(1), false).unwrap();
        // [U] hi [A] yo </s> [U] there [A] | hi there </s>: the earlier assistant turn is
        // part of the prompt, not trained
        assert_eq!(t.ids, vec![2, 4, 3, 6, 1, 2, 5, 3, 4, 5, 1]);
        let trained: Vec<usize> = (0..t.ids.len()).filter(|&i| t.trained[i]).collect();
        assert_eq!(trained, vec![8, 9, 10]);
        let r = t.pair.as_deref().unwrap();
        assert_eq!((&r.ids[8..], r.trained_count()), (&[7u32, 1][..], 2));
        // no template: plain text, the answer and EOS trained
        let plain = Example::Rated {
            prompt: vec![ChatMessage::new("user", "hi")],
            completion: vec![ChatMessage::new("assistant", " there")],
            desirable: false,
        };
        let t = tokenize_example(&plain, None, &tokenizer(), Some(1), false).unwrap();
        assert_eq!(
            (t.ids.clone(), t.trained.clone()),
            (vec![4, 5, 1], vec![false, true, true])
        );
        assert_eq!(t.desirable, Some(false));
        let e = tokenize_example(
            &Example::Rated {
                prompt,
                completion: vec![],
                desirable: true,
            },
            None,
            &tokenizer(),
            Some(1),
            false,
        )
        .unwrap_err();
        assert!(e.contains("no chat template"), "{e}");
    }

    #[test]
    fn documents_end_with_eos_and_templates_must_be_prefix_consistent() {
        let t = tokenize_example(
            &Example::Text {
                text: "doc doc".into(),
            },
            None,
            &tokenizer(),
            Some(1),
            false,
        )
        .unwrap();
        assert_eq!(t.ids, vec![7, 7, 1]);
        assert_eq!(t.trained_count(), 3);
        // A template that renders the last turn differently breaks the prefix rule.
        let tpl = ChatTemplate::new(
            "{% for m in messages %}{% if loop.last %}[A] {{ m.content }}{% else %}[U] {{ m.content }}{% endif %} {% endfor %}",
            "",
            "",
        )
        .unwrap();
        let ex = Example::Chat {
            messages: vec![
                ChatMessage::new("user", "hi"),
                ChatMessage::new("assistant", "yo"),
            ],
        };
        let e = tokenize_example(&ex, Some(&tpl), &tokenizer(), None, false).unwrap_err();
        assert!(e.contains("prefixes"), "{e}");
    }

    #[test]
    fn stats_count_long_records() {
        let s = length_stats(&[(10, 5), (100, 50), (300, 10)], 128);
        assert_eq!(
            (s.records, s.min_tokens, s.max_tokens, s.over_seq_len),
            (3, 10, 300, 1)
        );
        assert_eq!(s.histogram.iter().sum::<usize>(), 3);
        assert_eq!(s.trained_tokens, 65);
    }
}
