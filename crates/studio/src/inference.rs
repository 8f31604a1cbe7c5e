//! Running a model without training it: scoring text (mean next-token NLL) and chatting.
//!
//! Shared by the CLI (`whetstone score`, `whetstone chat`) and, later, the Playground screen.

use candle_core::Device;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use whetstone_data::{ChatMessage, ChatTemplate};
use whetstone_engine::{generate, DecoderModel, Generation, Ops, SamplingParams};
use whetstone_formats::ModelSource;

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// Bad input the user can fix (a file, a field, a device choice).
    #[error("{0}")]
    User(String),
    /// A failure inside the engine.
    #[error("{0}")]
    Internal(String),
}

impl From<whetstone_formats::FileError> for InferenceError {
    fn from(e: whetstone_formats::FileError) -> Self {
        InferenceError::User(e.to_string())
    }
}

impl From<candle_core::Error> for InferenceError {
    fn from(e: candle_core::Error) -> Self {
        InferenceError::Internal(e.to_string())
    }
}

pub struct Loaded {
    pub source: ModelSource,
    pub model: DecoderModel,
    pub device: Device,
    pub load_s: f64,
    /// Resident memory of the process right after the model was built (0 where unknown).
    pub rss_after_load_bytes: u64,
}

/// Open and build a model on the chosen device (`cpu`, `cuda[:N]`, `metal`) in f32, with
/// a trained adapter or checkpoint folder applied if one is given. With `nf4` the decoder
/// linears are stored as NF4 while loading, the base a QLoRA run trains on.
pub fn load(
    path: &Path,
    device: &str,
    adapter: Option<&Path>,
    nf4: bool,
) -> Result<Loaded, InferenceError> {
    load_in(path, device, adapter, nf4, "f32")
}

/// [`load`] computing in `dtype`: `f32`, `bf16`, or `auto` (bf16 where the device has it
/// natively), as the training key of that name.
pub fn load_in(
    path: &Path,
    device: &str,
    adapter: Option<&Path>,
    nf4: bool,
    dtype: &str,
) -> Result<Loaded, InferenceError> {
    let device = whetstone_engine::candle_device(device).map_err(InferenceError::User)?;
    let native = whetstone_engine::device::native_bf16(&device);
    let dtype = whetstone_engine::config::compute_dtype(dtype, native)
        .map_err(|e| InferenceError::User(format!("--dtype: {e}")))?;
    let started = Instant::now();
    let (source, mut model) = whetstone_engine::load_model_with(path, &device, dtype, nf4)?;
    if let Some(dir) = adapter {
        whetstone_engine::methods::load_adapter_dir(&mut model, dir)
            .map_err(InferenceError::User)?;
    }
    Ok(Loaded {
        source,
        model,
        device,
        load_s: started.elapsed().as_secs_f64(),
        rss_after_load_bytes: whetstone_engine::device::rss_bytes(),
    })
}

/// The loaded base with an adapter applied (or none), without reloading or touching the
/// base: the copy shares the base's tensors and only adds or replaces the adapter's, so
/// switching adapters on one loaded base costs the adapter's load alone.
pub fn with_adapter(
    loaded: &Loaded,
    adapter: Option<&Path>,
) -> Result<(DecoderModel, f64), InferenceError> {
    let started = Instant::now();
    let mut model = loaded.model.clone();
    if let Some(dir) = adapter {
        whetstone_engine::methods::load_adapter_dir(&mut model, dir)
            .map_err(InferenceError::User)?;
    }
    Ok((model, started.elapsed().as_secs_f64()))
}

/// `score --json`: field names are a contract (docs/design.md#scoring).
#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    pub model: String,
    pub tokens: usize,
    pub token_ids: Vec<u32>,
    pub mean_nll: f64,
    pub perplexity: f64,
    /// One value per predicted position (`tokens - 1` values), in nats.
    pub token_nll: Vec<f32>,
    pub load_s: f64,
    pub rss_after_load_bytes: u64,
    pub score_s: f64,
}

/// Mean next-token negative log-likelihood of `text`, tokenized as the model's own tokenizer
/// does (its special tokens, no chat template).
pub fn score(
    loaded: &Loaded,
    text: &str,
    source_name: &Path,
) -> Result<ScoreReport, InferenceError> {
    let ids = loaded.source.tokenizer.encode(text, true).map_err(|e| {
        InferenceError::User(format!("{}: cannot tokenize: {e}", source_name.display()))
    })?;
    if ids.len() < 2 {
        return Err(InferenceError::User(format!(
            "{}: the text has {} token(s); scoring needs at least 2",
            source_name.display(),
            ids.len()
        )));
    }
    let started = Instant::now();
    let token_nll = loaded.model.token_nll(&ids, Ops::Fused)?;
    let mean = token_nll.iter().map(|&x| x as f64).sum::<f64>() / token_nll.len() as f64;
    Ok(ScoreReport {
        model: loaded.source.path.display().to_string(),
        tokens: ids.len(),
        token_ids: ids,
        mean_nll: mean,
        perplexity: mean.exp(),
        token_nll,
        load_s: loaded.load_s,
        rss_after_load_bytes: loaded.rss_after_load_bytes,
        score_s: started.elapsed().as_secs_f64(),
    })
}

/// The prompt ids for one user turn: through the model's chat template when it has one
/// (special tokens come from the template), else the raw text with the tokenizer's specials.
pub fn chat_prompt(
    source: &ModelSource,
    prompt: &str,
    system: Option<&str>,
    raw: bool,
) -> Result<Vec<u32>, InferenceError> {
    if raw || source.chat_template.is_none() {
        return raw_prompt(source, prompt);
    }
    let mut messages = vec![];
    if let Some(s) = system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", prompt));
    conversation_prompt(source, &messages)
}

/// A plain text prompt, tokenized with the tokenizer's own special tokens (no template).
pub fn raw_prompt(source: &ModelSource, text: &str) -> Result<Vec<u32>, InferenceError> {
    source
        .tokenizer
        .encode(text, true)
        .map_err(|e| InferenceError::User(format!("cannot tokenize the prompt: {e}")))
}

/// The prompt ids of a whole conversation rendered by the model's chat template, ending
/// where the assistant's next reply begins. A model without a template is refused.
pub fn conversation_prompt(
    source: &ModelSource,
    messages: &[ChatMessage],
) -> Result<Vec<u32>, InferenceError> {
    let tok = &source.tokenizer;
    let Some(t) = source.chat_template.as_deref() else {
        return Err(InferenceError::User(format!(
            "{}: the model has no chat template; send plain text instead",
            source.path.display()
        )));
    };
    let tpl = ChatTemplate::new(
        t,
        tok.bos_token.as_deref().unwrap_or(""),
        tok.eos_token.as_deref().unwrap_or(""),
    )
    .map_err(|e| InferenceError::User(format!("{}: {e}", source.path.display())))?;
    let text = tpl.render(messages, true).map_err(|e| {
        InferenceError::User(format!("{}: chat template: {e}", source.path.display()))
    })?;
    tok.encode(&text, false)
        .map_err(|e| InferenceError::User(format!("cannot tokenize the prompt: {e}")))
}

/// Answer with `model` (the loaded base, or [`with_adapter`]'s copy of it).
pub fn chat(
    loaded: &Loaded,
    model: &DecoderModel,
    prompt_ids: &[u32],
    params: &SamplingParams,
    on_text: impl FnMut(&str),
) -> Result<Generation, InferenceError> {
    Ok(generate(
        model,
        &loaded.source.tokenizer,
        prompt_ids,
        params,
        on_text,
    )?)
}

/// One answer of [`answer_each`]: which adapter (`None` = the base) and what it said.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct ChatAnswer {
    /// The run id (or folder) whose adapter answered; `None` for the base model.
    pub adapter: Option<String>,
    pub text: String,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Seconds spent applying the adapter to the loaded base.
    pub switch_s: f64,
}

/// The same prompt answered by the base and by each adapter, on one loaded base. Each answer
/// samples with its own seed (`params.seed` plus its place), so the same adapter listed
/// twice gives two samples.
pub fn answer_each(
    loaded: &Loaded,
    adapters: &[(Option<String>, Option<std::path::PathBuf>)],
    prompt: &str,
    params: &SamplingParams,
) -> Result<Vec<ChatAnswer>, InferenceError> {
    let ids = chat_prompt(&loaded.source, prompt, None, false)?;
    let mut out = vec![];
    for (i, (name, dir)) in adapters.iter().enumerate() {
        let (model, switch_s) = with_adapter(loaded, dir.as_deref())?;
        let started = Instant::now();
        let params = SamplingParams {
            seed: params.seed.wrapping_add(i as u64),
            ..params.clone()
        };
        let g = chat(loaded, &model, &ids, &params, |_| {})?;
        out.push(ChatAnswer {
            adapter: name.clone(),
            text: g.text.trim().to_string(),
            tokens: g.token_ids.len(),
            seconds: started.elapsed().as_secs_f64(),
            tokens_per_s: g.tokens_per_s,
            switch_s,
        });
    }
    Ok(out)
}
