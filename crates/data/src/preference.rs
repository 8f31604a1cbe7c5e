//! Preference records: pairs for DPO / ORPO and rated answers for KTO, in the shapes people
//! have (TRL's "standard" strings, its conversational message lists, and conversations that
//! share their prompt turns with no `prompt` field). Every problem names its field.

use crate::record::{as_object, bad, kind_of, message_list, Check, Example};
use crate::template::ChatMessage;
use serde_json::Value;

/// The prompt: a string (one user turn) or a message list; never empty.
fn prompt_turns(v: &Value) -> Check<Vec<ChatMessage>> {
    let turns = match v {
        Value::String(s) if s.trim().is_empty() => return bad("prompt", "is empty"),
        Value::String(s) => vec![ChatMessage::new("user", s.clone())],
        Value::Array(_) => message_list(v, "prompt")?,
        v => {
            return bad(
                "prompt",
                format!("expected a string or a message list, got {}", kind_of(v)),
            )
        }
    };
    if turns.is_empty() || turns.iter().all(|m| m.content.trim().is_empty()) {
        return bad("prompt", "is empty");
    }
    if turns.last().is_some_and(|m| m.role == "assistant") {
        return bad(
            "prompt",
            "ends with an assistant turn; the answer being judged must come after it",
        );
    }
    Ok(turns)
}

/// An answer: a string (one assistant turn) or a message list starting with the assistant.
fn answer_turns(v: &Value, field: &str) -> Check<Vec<ChatMessage>> {
    let turns = match v {
        Value::String(s) => vec![ChatMessage::new("assistant", s.clone())],
        Value::Array(_) => message_list(v, field)?,
        Value::Null => return bad(field, "missing"),
        v => {
            return bad(
                field,
                format!("expected a string or a message list, got {}", kind_of(v)),
            )
        }
    };
    check_answer(&turns, field)?;
    Ok(turns)
}

fn check_answer(turns: &[ChatMessage], field: &str) -> Check<()> {
    match turns.first() {
        None => bad(field, "is empty"),
        Some(m) if m.role != "assistant" => bad(
            &format!("{field}[0].role"),
            format!(
                "the answer must start with an assistant turn, not \"{}\"",
                m.role
            ),
        ),
        _ if turns.iter().all(|m| m.content.trim().is_empty()) => bad(field, "is empty"),
        _ => Ok(()),
    }
}

/// `{"prompt", "chosen", "rejected"}`, or `{"chosen", "rejected"}` as whole conversations
/// whose shared leading turns are the prompt.
pub(crate) fn pair(v: &Value) -> Check<Example> {
    let o = as_object(v)?;
    let get = |f: &str| o.get(f).filter(|v| !v.is_null());
    let (Some(c), Some(r)) = (get("chosen"), get("rejected")) else {
        let missing = if get("chosen").is_none() {
            "chosen"
        } else {
            "rejected"
        };
        return bad(missing, "missing");
    };
    let (prompt, chosen, rejected) = match get("prompt") {
        Some(p) => (
            prompt_turns(p)?,
            answer_turns(c, "chosen")?,
            answer_turns(r, "rejected")?,
        ),
        None => {
            if !(c.is_array() && r.is_array()) {
                return bad(
                    "prompt",
                    "missing (without it, `chosen` and `rejected` must be conversations sharing their prompt turns)",
                );
            }
            let (c, r) = (message_list(c, "chosen")?, message_list(r, "rejected")?);
            // the shared turns up to the last one before the answers diverge that is not
            // the assistant's: the answer being judged starts with an assistant turn
            let mut shared = c.iter().zip(&r).take_while(|(a, b)| a == b).count();
            while shared > 0 && c[shared - 1].role == "assistant" {
                shared -= 1;
            }
            if shared == 0 {
                return bad(
                    "prompt",
                    "is empty: `chosen` and `rejected` share no prompt turns",
                );
            }
            check_answer(&c[shared..], "chosen")?;
            check_answer(&r[shared..], "rejected")?;
            (
                c[..shared].to_vec(),
                c[shared..].to_vec(),
                r[shared..].to_vec(),
            )
        }
    };
    if chosen == rejected {
        return bad(
            "rejected",
            "is identical to `chosen`, so the pair prefers nothing",
        );
    }
    Ok(Example::Pair {
        prompt,
        chosen,
        rejected,
    })
}

/// `{"prompt", "completion", "label": true|false}`.
pub(crate) fn rated(v: &Value) -> Check<Example> {
    let o = as_object(v)?;
    let prompt = match o.get("prompt").filter(|v| !v.is_null()) {
        Some(p) => prompt_turns(p)?,
        None => return bad("prompt", "missing"),
    };
    let completion = answer_turns(o.get("completion").unwrap_or(&Value::Null), "completion")?;
    let desirable = match o.get("label") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => return bad("label", "missing"),
        Some(v) => {
            return bad(
                "label",
                format!(
                    "expected true (desirable) or false (undesirable), got {}",
                    kind_of(v)
                ),
            )
        }
    };
    Ok(Example::Rated {
        prompt,
        completion,
        desirable,
    })
}

#[cfg(test)]
mod tests {
    use crate::dataset::{load, DatasetFormat, Example};

    fn load_text(name: &str, text: &str) -> Result<crate::Dataset, String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        load(&p, None, None, false).map_err(|e| e.to_string())
    }

    #[test]
    fn the_three_shapes_are_detected_and_split_into_prompt_and_answers() {
        let s = load_text(
            "p.jsonl",
            r#"{"prompt": "2+2?", "chosen": "4", "rejected": "5"}"#,
        )
        .unwrap();
        assert_eq!(s.format, DatasetFormat::Preference);
        let Example::Pair {
            prompt,
            chosen,
            rejected,
        } = &s.examples[0].1
        else {
            panic!()
        };
        assert_eq!(
            (prompt[0].role.as_str(), prompt[0].content.as_str()),
            ("user", "2+2?")
        );
        assert_eq!(
            (chosen[0].role.as_str(), rejected[0].content.as_str()),
            ("assistant", "5")
        );

        let implicit = r#"{"chosen": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "rejected": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}"#;
        let c = load_text("c.jsonl", implicit).unwrap();
        let Example::Pair { prompt, chosen, .. } = &c.examples[0].1 else {
            panic!()
        };
        assert_eq!((prompt.len(), chosen.len()), (2, 1));

        let k = load_text(
            "k.jsonl",
            "{\"prompt\": \"2+2?\", \"completion\": \"4\", \"label\": true}\n{\"prompt\": [{\"role\": \"user\", \"content\": \"3+3?\"}], \"completion\": [{\"role\": \"assistant\", \"content\": \"7\"}], \"label\": false}\n",
        )
        .unwrap();
        assert_eq!(k.format, DatasetFormat::Kto);
        assert!(matches!(
            k.examples[1].1,
            Example::Rated {
                desirable: false,
                ..
            }
        ));
    }

    #[test]
    fn bad_pairs_name_line_and_field() {
        let cases = [
            (
                r#"{"prompt": "q", "chosen": "same", "rejected": "same"}"#,
                "line 2: field `rejected`: is identical to `chosen`",
            ),
            (
                r#"{"prompt": "  ", "chosen": "a", "rejected": "b"}"#,
                "line 2: field `prompt`: is empty",
            ),
            (
                r#"{"chosen": "a", "rejected": "b"}"#,
                "line 2: field `prompt`: missing",
            ),
            (
                r#"{"prompt": "q", "chosen": "a"}"#,
                "line 2: field `rejected`: missing",
            ),
            (
                r#"{"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "b"}]}"#,
                "line 2: field `prompt`: is empty: `chosen` and `rejected` share no prompt turns",
            ),
            (
                r#"{"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}"#,
                "field `chosen[0].role`: the answer must start with an assistant turn",
            ),
        ];
        for (bad, want) in cases {
            let text = format!(
                "{{\"prompt\": \"fine\", \"chosen\": \"a\", \"rejected\": \"b\"}}\n{bad}\n"
            );
            let e = load_text("bad.jsonl", &text).unwrap_err();
            assert!(
                e.contains("bad.jsonl: ") && e.contains(want),
                "{e}\nwanted: {want}"
            );
        }
        let e = load_text(
            "k.jsonl",
            "{\"prompt\": \"q\", \"completion\": \"a\", \"label\": \"yes\"}\n",
        )
        .unwrap_err();
        assert!(e.contains("line 1: field `label`: expected true (desirable) or false (undesirable), got a string"), "{e}");
    }
}
