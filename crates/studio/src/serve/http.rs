//! The routes: OpenAI's `/v1/models`, `/v1/chat/completions` and `/v1/completions`, plus
//! `/v1/adapters` to add and remove adapters while serving. Every error is OpenAI-shaped.

use super::openai::{self, ApiError, Head, Prompt};
use super::worker::{Event, Job};
use super::Shared;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

type S = State<Arc<Shared>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self.body())).into_response()
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let v1 = Router::new()
        .route("/models", get(models))
        .route("/models/{name}", get(model))
        .route("/chat/completions", post(chat))
        .route("/completions", post(completions))
        .route("/adapters", post(add_adapter))
        .route("/adapters/{name}", delete(remove_adapter))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .with_state(shared)
}

async fn auth(State(s): S, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

fn model_object(info: &super::ServedModel) -> Value {
    json!({
        "id": info.id,
        "object": "model",
        "created": info.created,
        "owned_by": "whetstone",
        "kind": info.kind,
        "source": info.source,
    })
}

async fn models(State(s): S) -> Json<Value> {
    let data: Vec<Value> = s.infos().iter().map(model_object).collect();
    Json(json!({"object": "list", "data": data}))
}

async fn model(State(s): S, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    match s.entry(&name) {
        Some(e) => Ok(Json(model_object(&e.info))),
        None => Err(ApiError::unknown_model(&name, &s.names())),
    }
}

async fn add_adapter(State(s): S, body: Bytes) -> Result<Response, ApiError> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(&e))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::missing(k))
    };
    let (name, source) = (field("name")?, field("source")?);
    let info = s
        .add_adapter(&name, &source)
        .await
        .map_err(|e| ApiError::field("source", e))?;
    Ok((StatusCode::CREATED, Json(model_object(&info))).into_response())
}

async fn remove_adapter(State(s): S, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    if s.entry(&name).is_none() {
        return Err(ApiError::unknown_model(&name, &s.names()));
    }
    s.remove_adapter(&name)
        .map_err(|e| ApiError::field("name", e))?;
    Ok(Json(
        json!({"id": name, "object": "model", "deleted": true}),
    ))
}

async fn chat(State(s): S, body: Bytes) -> Response {
    complete(s, body, true)
        .await
        .unwrap_or_else(|e| e.into_response())
}

async fn completions(State(s): S, body: Bytes) -> Response {
    complete(s, body, false)
        .await
        .unwrap_or_else(|e| e.into_response())
}

/// Read the request, tokenize it, queue it, and answer whole or as a stream.
async fn complete(s: Arc<Shared>, body: Bytes, chat: bool) -> Result<Response, ApiError> {
    let serial = s.next_id.fetch_add(1, Ordering::Relaxed);
    let seed = serial ^ super::unix_now().rotate_left(20);
    let req = openai::parse(&body, chat, seed)?;
    let entry = s
        .entry(&req.model)
        .ok_or_else(|| ApiError::unknown_model(&req.model, &s.names()))?;
    let (ids, param) = match &req.prompt {
        Prompt::Chat(m) => (
            crate::inference::conversation_prompt(&s.loaded.source, m),
            "messages",
        ),
        Prompt::Text(t) => (crate::inference::raw_prompt(&s.loaded.source, t), "prompt"),
    };
    let ids = ids.map_err(|e| ApiError::field(param, e.to_string()))?;
    if ids.is_empty() {
        return Err(ApiError::field(param, "the prompt has no tokens"));
    }
    let context = s.context();
    if ids.len() >= context {
        return Err(ApiError::too_long(
            param,
            format!(
                "the prompt is {} tokens; this model's context is {context} tokens, \
                 so a prompt may have at most {}",
                ids.len(),
                context - 1
            ),
        ));
    }
    let room = context - ids.len();
    let max_tokens = match req.max_tokens {
        Some(n) if n > room => {
            return Err(ApiError::too_long(
                "max_tokens",
                format!(
                    "the prompt ({} tokens) plus max_tokens ({n}) exceeds this model's \
                     context of {context} tokens; ask for at most {room}",
                    ids.len()
                ),
            ))
        }
        Some(n) => n,
        None => room,
    };
    let (tx, rx) = unbounded_channel();
    let prompt_tokens = ids.len();
    let job = Job {
        entry,
        prompt_ids: ids,
        params: whetstone_engine::SamplingParams {
            max_tokens,
            ..req.params.clone()
        },
        events: tx,
        queued_at: Instant::now(),
    };
    {
        let jobs = s
            .jobs
            .lock()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let sender = jobs
            .as_ref()
            .ok_or_else(|| ApiError::internal("the server is stopping"))?;
        super::lock_stats(&s.stats).queued += 1;
        if let Err(e) = sender.try_send(job) {
            super::lock_stats(&s.stats).queued -= 1;
            return Err(match e {
                std::sync::mpsc::TrySendError::Full(_) => ApiError::busy(s.stats().queued),
                std::sync::mpsc::TrySendError::Disconnected(_) => {
                    ApiError::internal("the model thread has stopped")
                }
            });
        }
    }
    let id = format!("{}-{serial}", if chat { "chatcmpl" } else { "cmpl" });
    let answer = Answer {
        id,
        created: super::unix_now(),
        model: req.model.clone(),
        chat,
        prompt_tokens,
        include_usage: req.include_usage,
    };
    if req.stream {
        Ok(stream(answer, rx).into_response())
    } else {
        whole(answer, rx).await
    }
}

struct Answer {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    prompt_tokens: usize,
    include_usage: bool,
}

impl Answer {
    fn head(&self) -> Head<'_> {
        Head {
            id: &self.id,
            created: self.created,
            model: &self.model,
            chat: self.chat,
        }
    }
}

async fn whole(a: Answer, mut rx: UnboundedReceiver<Event>) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Failed(e) => return Err(ApiError::internal(e)),
            Event::Done {
                generation: g,
                queue_s,
            } => {
                let usage = openai::usage(a.prompt_tokens, g.token_ids.len());
                let mut v =
                    a.head()
                        .response(&g.text, openai::finish_reason(g.finish_reason), usage);
                v["whetstone"] = json!({
                    "token_ids": g.token_ids,
                    "queue_s": queue_s,
                    "prefill_s": g.prefill_s,
                    "decode_s": g.decode_s,
                    "tokens_per_s": g.tokens_per_s,
                });
                return Ok(Json(v).into_response());
            }
        }
    }
    Err(ApiError::internal(
        "the model thread stopped before answering",
    ))
}

/// Server-sent events: an opening chunk with the role, one chunk per piece of text, a
/// closing chunk with the finish reason, the usage chunk when asked for, then `[DONE]`.
/// Dropping the stream (the client left) drops the receiver, which stops the generation.
fn stream(
    a: Answer,
    rx: UnboundedReceiver<Event>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    enum Phase {
        Open,
        Body,
        Closed,
    }
    let data = |v: Value| Ok::<_, Infallible>(SseEvent::default().data(v.to_string()));
    let s = futures::stream::unfold((a, rx, Phase::Open), move |(a, mut rx, phase)| async move {
        match phase {
            Phase::Open => {
                // chat opens with the role; completions with an empty text
                let first = a.head().chunk(Some(""), a.chat, None);
                Some((vec![data(first)], (a, rx, Phase::Body)))
            }
            Phase::Body => {
                let mut out = match rx.recv().await {
                    Some(Event::Text(t)) => {
                        return Some((
                            vec![data(a.head().chunk(Some(&t), false, None))],
                            (a, rx, Phase::Body),
                        ))
                    }
                    Some(Event::Done { generation: g, .. }) => {
                        let finish = openai::finish_reason(g.finish_reason);
                        let mut out = vec![data(a.head().chunk(None, false, Some(finish)))];
                        if a.include_usage {
                            let u = openai::usage(a.prompt_tokens, g.token_ids.len());
                            out.push(data(a.head().usage_chunk(u)));
                        }
                        out
                    }
                    Some(Event::Failed(e)) => vec![data(ApiError::internal(e).body())],
                    None => vec![data(
                        ApiError::internal("the model thread stopped before answering").body(),
                    )],
                };
                out.push(Ok(SseEvent::default().data("[DONE]")));
                Some((out, (a, rx, Phase::Closed)))
            }
            Phase::Closed => None,
        }
    });
    let flat = futures::StreamExt::flat_map(s, futures::stream::iter);
    Sse::new(flat).keep_alive(KeepAlive::default())
}
