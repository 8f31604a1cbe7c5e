//! The OpenAI API's shapes: reading a request field by field (every refusal names its
//! field), and writing responses, stream chunks and errors as OpenAI's clients expect them.

use serde_json::{json, Map, Value};
use whetstone_data::ChatMessage;
use whetstone_engine::{FinishReason, SamplingParams};

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: a field is missing, of the wrong type or out of range.
    pub fn field(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: Some("invalid_value"),
        }
    }

    pub fn missing(param: &str) -> Self {
        Self {
            code: Some("missing_required_parameter"),
            ..Self::field(param, format!("missing required field `{param}`"))
        }
    }

    /// 400: a field this server does not implement, named, rather than ignored.
    pub fn unsupported(param: &str, why: &str) -> Self {
        Self {
            code: Some("unsupported_parameter"),
            ..Self::field(param, format!("`{param}` is not supported here: {why}"))
        }
    }

    pub fn bad_json(e: &serde_json::Error) -> Self {
        Self {
            status: 400,
            message: format!("the request body is not valid JSON: {e}"),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_json"),
        }
    }

    pub fn unknown_model(name: &str, known: &[String]) -> Self {
        Self {
            status: 404,
            message: format!(
                "the model `{name}` does not exist here; served models: {}",
                known.join(", ")
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    pub fn too_long(param: &str, message: String) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::field(param, message)
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            status: 401,
            message: "incorrect API key: send `Authorization: Bearer <key>` with the key the \
                      server was started with"
                .into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    pub fn not_found(path: &str) -> Self {
        Self {
            status: 404,
            message: format!("no route `{path}` (see GET /v1/models)"),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
        }
    }

    pub fn busy(queued: usize) -> Self {
        Self {
            status: 429,
            message: format!("the server is busy: {queued} requests are already queued"),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// What a completion request asks for, once read and checked.
#[derive(Debug, Clone)]
pub struct Request {
    pub model: String,
    pub prompt: Prompt,
    /// `None`: until the context is full (OpenAI's default).
    pub max_tokens: Option<usize>,
    pub params: SamplingParams,
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Debug, Clone)]
pub enum Prompt {
    Chat(Vec<ChatMessage>),
    Text(String),
}

type Obj = Map<String, Value>;

fn object(body: &[u8]) -> Result<Obj, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::field(
            "body",
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_json(&e)),
    }
}

fn present<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn string(o: &Obj, key: &str) -> Result<Option<String>, ApiError> {
    match present(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::field(key, format!("`{key}` must be a string"))),
    }
}

fn number(o: &Obj, key: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match present(o, key) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::field(
                key,
                format!("`{key}` must be a number from {lo} to {hi}"),
            )),
        },
    }
}

fn count(o: &Obj, key: &str, min: u64) -> Result<Option<u64>, ApiError> {
    match present(o, key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(x) if x >= min => Ok(Some(x)),
            _ => Err(ApiError::field(
                key,
                format!("`{key}` must be an integer of at least {min}"),
            )),
        },
    }
}

fn boolean(o: &Obj, key: &str) -> Result<bool, ApiError> {
    match present(o, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::field(
            key,
            format!("`{key}` must be true or false"),
        )),
    }
}

/// Fields that would change the answer and that this server does not implement: refused
/// by name when set to anything but their neutral value.
fn refuse_unsupported(o: &Obj, completions: bool) -> Result<(), ApiError> {
    for key in ["frequency_penalty", "presence_penalty"] {
        if number(o, key, -2.0, 2.0)?.is_some_and(|x| x != 0.0) {
            return Err(ApiError::unsupported(
                key,
                "use `repetition_penalty` (transformers' multiplicative penalty) instead",
            ));
        }
    }
    if count(o, "n", 1)?.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported("n", "one choice per request"));
    }
    if present(o, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        return Err(ApiError::unsupported("logit_bias", "no logit biases"));
    }
    let logprobs = present(o, "logprobs")
        .is_some_and(|v| v != &Value::Bool(false) && (completions || v.is_boolean()));
    if logprobs {
        return Err(ApiError::unsupported("logprobs", "no log-probabilities"));
    }
    if present(o, "tools").is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(ApiError::unsupported("tools", "no tool calling"));
    }
    if let Some(f) = present(o, "response_format") {
        if f.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::unsupported(
                "response_format",
                "only {\"type\": \"text\"}",
            ));
        }
    }
    if completions {
        if boolean(o, "echo")? {
            return Err(ApiError::unsupported("echo", "the prompt is not echoed"));
        }
        if string(o, "suffix")?.is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::unsupported("suffix", "no fill-in-the-middle"));
        }
        if count(o, "best_of", 1)?.is_some_and(|n| n != 1) {
            return Err(ApiError::unsupported(
                "best_of",
                "one candidate per request",
            ));
        }
    }
    Ok(())
}

/// The text of one message's `content`: a string, or a list of `{"type": "text"}` parts.
fn content(v: Option<&Value>, at: &str) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, p) in parts.iter().enumerate() {
                let here = format!("{at}[{i}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => match p.get("text").and_then(Value::as_str) {
                        Some(t) => text.push_str(t),
                        None => return Err(ApiError::missing(&format!("{here}.text"))),
                    },
                    Some(other) => {
                        return Err(ApiError::unsupported(
                            &format!("{here}.type"),
                            &format!("`{other}` parts (only text is read)"),
                        ))
                    }
                    None => return Err(ApiError::missing(&format!("{here}.type"))),
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::field(
            at,
            format!("`{at}` must be a string or a list of parts"),
        )),
    }
}

fn messages(o: &Obj) -> Result<Vec<ChatMessage>, ApiError> {
    let list = match present(o, "messages") {
        None => return Err(ApiError::missing("messages")),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => {
            return Err(ApiError::field(
                "messages",
                "`messages` must be a non-empty list",
            ))
        }
    };
    let mut out = vec![];
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Some(m) = m.as_object() else {
            return Err(ApiError::field(&at, format!("`{at}` must be an object")));
        };
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("system" | "user" | "assistant")) => r,
            Some("developer") => "system",
            Some(other) => {
                return Err(ApiError::field(
                    &format!("{at}.role"),
                    format!("role `{other}` is not one of system, developer, user, assistant"),
                ))
            }
            None => return Err(ApiError::missing(&format!("{at}.role"))),
        };
        if role != "assistant" && m.get("content").is_none() {
            return Err(ApiError::missing(&format!("{at}.content")));
        }
        out.push(ChatMessage::new(
            role,
            content(m.get("content"), &format!("{at}.content"))?,
        ));
    }
    Ok(out)
}

fn stops(o: &Obj) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::field(
            "stop",
            "`stop` must be a string or a list of up to 4 strings",
        )
    };
    match present(o, "stop") {
        None => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.len() <= 4 => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
    .map(|v| v.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Read a `/v1/chat/completions` (`chat`) or `/v1/completions` body. `fresh_seed` is the
/// seed used when the request names none.
pub fn parse(body: &[u8], chat: bool, fresh_seed: u64) -> Result<Request, ApiError> {
    let o = object(body)?;
    let model = string(&o, "model")?.ok_or_else(|| ApiError::missing("model"))?;
    refuse_unsupported(&o, !chat)?;
    let prompt = if chat {
        Prompt::Chat(messages(&o)?)
    } else {
        match present(&o, "prompt") {
            None => return Err(ApiError::missing("prompt")),
            Some(Value::String(s)) => Prompt::Text(s.clone()),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                Prompt::Text(a[0].as_str().unwrap_or_default().to_string())
            }
            Some(_) => {
                return Err(ApiError::field(
                    "prompt",
                    "`prompt` must be a string (or a list of exactly one string)",
                ))
            }
        }
    };
    let max_tokens = match count(&o, "max_completion_tokens", 1)? {
        Some(n) => Some(n),
        None => count(&o, "max_tokens", 1)?,
    };
    let temperature = number(&o, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = number(&o, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    if top_p == 0.0 {
        return Err(ApiError::field("top_p", "`top_p` must be above 0"));
    }
    let seed = match present(&o, "seed") {
        None => fresh_seed,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|x| x as u64))
            .ok_or_else(|| ApiError::field("seed", "`seed` must be an integer"))?,
    };
    let stream = boolean(&o, "stream")?;
    let include_usage = match present(&o, "stream_options") {
        Some(Value::Object(s)) => boolean(s, "include_usage")?,
        Some(_) => {
            return Err(ApiError::field(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
        None => false,
    };
    let params = SamplingParams {
        max_tokens: usize::MAX,
        temperature,
        top_k: count(&o, "top_k", 0)?
            .map(|k| k as usize)
            .filter(|&k| k > 0),
        top_p: (top_p < 1.0).then_some(top_p),
        repetition_penalty: number(&o, "repetition_penalty", 0.01, 10.0)?.unwrap_or(1.0) as f32,
        seed,
        stop_strings: stops(&o)?,
    };
    Ok(Request {
        model,
        prompt,
        max_tokens: max_tokens.map(|n| n as usize),
        params,
        stream,
        include_usage,
    })
}

/// OpenAI's name for why an answer ended.
pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Eos | FinishReason::StopString | FinishReason::Cancelled => "stop",
    }
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// The head every response and chunk shares.
pub struct Head<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub chat: bool,
}

impl Head<'_> {
    fn with(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": format!("whetstone-{}", crate::APP_VERSION),
            "choices": choices,
        })
    }

    /// A whole answer (no streaming).
    pub fn response(&self, text: &str, finish: &str, usage: Value) -> Value {
        let choice = if self.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text},
                   "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
        };
        let mut v = self.with(
            if self.chat {
                "chat.completion"
            } else {
                "text_completion"
            },
            json!([choice]),
        );
        v["usage"] = usage;
        v
    }

    /// One stream chunk: a piece of text, the opening role (chat), or the finish reason.
    pub fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = if self.chat {
            let mut delta = Map::new();
            if role {
                delta.insert("role".into(), "assistant".into());
            }
            if let Some(t) = text {
                delta.insert("content".into(), t.into());
            }
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null,
                   "finish_reason": finish})
        };
        self.with(self.object(), json!([choice]))
    }

    /// The closing usage chunk (`stream_options.include_usage`): no choices, only counts.
    pub fn usage_chunk(&self, usage: Value) -> Value {
        let mut v = self.with(self.object(), json!([]));
        v["usage"] = usage;
        v
    }

    fn object(&self) -> &'static str {
        if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Request, ApiError> {
        parse(body.as_bytes(), true, 7)
    }

    #[test]
    fn a_minimal_chat_request_gets_openai_defaults() {
        let r = chat(r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.params.temperature, 1.0);
        assert_eq!(r.params.top_p, None);
        assert_eq!(r.params.top_k, None);
        assert_eq!(r.params.repetition_penalty, 1.0);
        assert_eq!(r.params.seed, 7);
        assert_eq!(r.max_tokens, None);
        assert!(!r.stream);
        match r.prompt {
            Prompt::Chat(m) => {
                assert_eq!((m[0].role.as_str(), m[0].content.as_str()), ("user", "hi"))
            }
            Prompt::Text(_) => panic!("not a chat"),
        }
    }

    #[test]
    fn every_refusal_names_its_field() {
        let cases = [
            (r#"{"messages": []}"#, "model"),
            (r#"{"model": "m"}"#, "messages"),
            (
                r#"{"model": "m", "messages": [{"content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user"}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
                "messages[0].content[0].type",
            ),
        ];
        // one good message plus one bad field
        let with = |extra: &str| {
            format!(
                r#"{{"model": "m", "messages": [{{"role": "user", "content": "x"}}], {extra}}}"#
            )
        };
        let extra = [
            (with(r#""temperature": 3"#), "temperature"),
            (with(r#""max_tokens": 0"#), "max_tokens"),
            (with(r#""n": 2"#), "n"),
            (with(r#""presence_penalty": 1"#), "presence_penalty"),
            (with(r#""stop": 3"#), "stop"),
        ];
        let cases = cases.iter().map(|(b, f)| (b.to_string(), *f)).chain(extra);
        for (body, field) in cases {
            let body = body.as_str();
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(field), "{body}: {}", e.message);
        }
        let e = chat("{not json").unwrap_err();
        assert_eq!((e.status, e.code), (400, Some("invalid_json")));
    }

    #[test]
    fn completions_read_a_prompt_and_stop_lists() {
        let r = parse(
            br#"{"model": "m", "prompt": ["Once"], "stop": ["\n", ""], "seed": 3, "max_tokens": 5, "temperature": 0}"#,
            false,
            0,
        )
        .unwrap();
        assert!(matches!(r.prompt, Prompt::Text(ref t) if t == "Once"));
        assert_eq!(r.params.stop_strings, vec!["\n".to_string()]);
        assert_eq!(
            (r.params.seed, r.max_tokens, r.params.temperature),
            (3, Some(5), 0.0)
        );
        let e = parse(br#"{"model": "m", "prompt": "x", "echo": true}"#, false, 0).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("echo"));
    }

    #[test]
    fn chunks_have_openai_shapes() {
        let h = Head {
            id: "chatcmpl-1",
            created: 1,
            model: "m",
            chat: true,
        };
        let c = h.chunk(None, true, None);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        let r = h.response("hi", "stop", usage(3, 1));
        assert_eq!(r["choices"][0]["message"]["content"], "hi");
        assert_eq!(r["usage"]["total_tokens"], 4);
        assert_eq!(
            ApiError::unauthorized().body()["error"]["code"],
            "invalid_api_key"
        );
    }
}
