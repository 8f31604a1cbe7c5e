//! One record of a dataset file: the example it becomes, and the checks every format's
//! reader shares (each problem names its field).

use crate::template::ChatMessage;
use serde::Serialize;
use serde_json::Value;

/// One training example: a conversation (the assistant turns are what is learned) or a
/// plain document (every token is learned).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Example {
    Chat {
        messages: Vec<ChatMessage>,
    },
    Text {
        text: String,
    },
    /// A preference pair: the prompt turns, then the preferred and the dispreferred answer.
    Pair {
        prompt: Vec<ChatMessage>,
        chosen: Vec<ChatMessage>,
        rejected: Vec<ChatMessage>,
    },
    /// One answer rated desirable or not (KTO).
    Rated {
        prompt: Vec<ChatMessage>,
        completion: Vec<ChatMessage>,
        desirable: bool,
    },
}

impl Example {
    /// Whether this is preference data (a pair or a rated answer).
    pub fn is_preference(&self) -> bool {
        matches!(self, Example::Pair { .. } | Example::Rated { .. })
    }
}

pub(crate) type Check<T> = Result<T, (Option<String>, String)>;

pub(crate) fn bad<T>(field: &str, message: impl Into<String>) -> Check<T> {
    Err((Some(field.to_string()), message.into()))
}

pub(crate) fn string_field(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    required: bool,
) -> Check<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) if required => bad(field, "missing"),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => bad(field, "is empty"),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => bad(field, format!("expected a string, got {}", kind_of(v))),
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn as_object(v: &Value) -> Check<&serde_json::Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| (None, format!("expected a JSON object, got {}", kind_of(v))))
}

/// A list of `{role, content}` messages (`field` names it in errors).
pub(crate) fn message_list(v: &Value, field: &str) -> Check<Vec<ChatMessage>> {
    let list = match v {
        Value::Array(a) => a,
        v => return bad(field, format!("expected an array, got {}", kind_of(v))),
    };
    let mut messages = vec![];
    for (i, m) in list.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let Some(m) = m.as_object() else {
            return bad(&field, "expected an object with `role` and `content`");
        };
        let role =
            string_field(m, "role", true).map_err(|(_, e)| (Some(format!("{field}.role")), e))?;
        let role = role.unwrap_or_default();
        if !matches!(role.as_str(), "system" | "user" | "assistant") {
            return bad(
                &format!("{field}.role"),
                format!("\"{role}\" is not one of system, user, assistant"),
            );
        }
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return bad(
                    &format!("{field}.content"),
                    format!("expected a string, got {}", kind_of(v)),
                )
            }
            None => return bad(&format!("{field}.content"), "missing"),
        };
        messages.push(ChatMessage::new(role, content));
    }
    Ok(messages)
}
