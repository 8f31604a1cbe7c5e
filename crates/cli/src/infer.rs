//! `whetstone score` and `whetstone chat`.

use crate::common::UserError;
use crate::common::{model_error, open_store};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use whetstone_studio::inference::{self, InferenceError, Loaded};
use whetstone_studio::models;
use whetstone_studio::{Generation, SamplingParams};

fn inference_error(e: InferenceError) -> anyhow::Error {
    match e {
        InferenceError::User(m) => UserError(m).into(),
        InferenceError::Internal(m) => anyhow::anyhow!(m),
    }
}

/// Where and how a model is built: device, NF4 base, compute dtype.
#[derive(Clone, Copy)]
pub struct LoadHow<'a> {
    pub device: &'a str,
    pub nf4: bool,
    pub dtype: &'a str,
}

pub(crate) async fn load(
    model: &str,
    adapter: Option<&str>,
    how: LoadHow<'_>,
) -> anyhow::Result<Loaded> {
    let store = open_store().await?;
    let path: PathBuf = models::resolve(&store, model).await.map_err(model_error)?;
    let adapter = match adapter {
        Some(a) => Some(
            whetstone_studio::runs::adapter_dir(&store, a)
                .await
                .map_err(crate::common::run_error)?,
        ),
        None => None,
    };
    store.close().await;
    let (device, dtype, nf4) = (how.device.to_string(), how.dtype.to_string(), how.nf4);
    tokio::task::spawn_blocking(move || {
        inference::load_in(&path, &device, adapter.as_deref(), nf4, &dtype)
    })
    .await?
    .map_err(inference_error)
}

/// `whetstone score`'s arguments, as clap reads them.
#[derive(clap::Args)]
pub struct ScoreArgs {
    /// A registered model id, an HF model folder or a .gguf file.
    #[arg(long)]
    pub model: String,
    /// A trained adapter: a run id or an adapter / checkpoint folder.
    #[arg(long)]
    pub adapter: Option<String>,
    /// UTF-8 text to score, tokenized as the model's tokenizer does (no chat template).
    #[arg(long)]
    pub text_file: PathBuf,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Store the decoder linears as NF4 while loading (the base QLoRA trains on).
    #[arg(long)]
    pub nf4: bool,
    /// Compute in f32, bf16, or auto (bf16 on GPUs with native bf16).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn score(a: ScoreArgs) -> anyhow::Result<ExitCode> {
    let text_file: &Path = &a.text_file;
    let text = std::fs::read_to_string(text_file)
        .map_err(|e| UserError(format!("{}: cannot read: {e}", text_file.display())))?;
    let how = LoadHow {
        device: &a.device,
        nf4: a.nf4,
        dtype: &a.dtype,
    };
    let loaded = load(&a.model, a.adapter.as_deref(), how).await?;
    let json = a.json;
    let file = text_file.to_path_buf();
    let report = tokio::task::spawn_blocking(move || inference::score(&loaded, &text, &file))
        .await?
        .map_err(inference_error)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} tokens · mean NLL {:.4} nats · perplexity {:.3} · scored in {:.2}s",
            report.tokens, report.mean_nll, report.perplexity, report.score_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `whetstone chat`'s arguments, as clap reads them.
#[derive(clap::Args)]
pub struct ChatArgs {
    /// A registered model id, an HF model folder or a .gguf file.
    #[arg(long)]
    pub model: String,
    /// A trained adapter: a run id or an adapter / checkpoint folder. Repeat it to answer
    /// once per adapter on one loaded base (`base` = no adapter), side by side.
    #[arg(long = "adapter", value_name = "ADAPTER")]
    pub adapters: Vec<String>,
    pub prompt: String,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 = greedy decoding.
    #[arg(long, default_value_t = 0.3)]
    pub temperature: f64,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Keep the most likely tokens up to this probability mass (1 = off).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long, default_value_t = 1.1)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop when the answer contains this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// A system message for the chat template.
    #[arg(long)]
    pub system: Option<String>,
    /// Send the prompt as raw text, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute in f32, bf16, or auto (bf16 on GPUs with native bf16).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Print one JSON object (prompt and answer token ids, text, speed) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

impl ChatArgs {
    /// The sampling settings the flags describe (0 turns top-k off, 1 top-p).
    fn params(&self) -> SamplingParams {
        SamplingParams {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_k: (self.top_k > 0).then_some(self.top_k),
            top_p: (self.top_p < 1.0).then_some(self.top_p),
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop_strings: self.stop.clone(),
        }
    }
}

fn print_stats(g: &Generation) {
    let reason = serde_json::to_value(g.finish_reason).unwrap_or_default();
    eprintln!(
        "— {} tokens at {:.1} tokens/s (prompt {} tokens in {:.2}s, stopped: {})",
        g.token_ids.len(),
        g.tokens_per_s,
        g.prompt_tokens,
        g.prefill_s,
        reason.as_str().unwrap_or("?")
    );
}

/// One answer per adapter from one loaded base. With a single adapter (or none) the answer
/// streams and `--json` prints one object, as before; with several, each answer is labelled
/// and `--json` prints `{"answers": [...]}` with the time each adapter switch took.
pub async fn chat(a: ChatArgs) -> anyhow::Result<ExitCode> {
    let params = a.params();
    let how = LoadHow {
        device: &a.device,
        nf4: false,
        dtype: &a.dtype,
    };
    let loaded = load(&a.model, None, how).await?;
    let store = open_store().await?;
    let mut adapters: Vec<(String, Option<PathBuf>)> = vec![];
    for r in &a.adapters {
        let dir = if r == "base" {
            None
        } else {
            Some(
                whetstone_studio::runs::adapter_dir(&store, r)
                    .await
                    .map_err(crate::common::run_error)?,
            )
        };
        adapters.push((r.clone(), dir));
    }
    store.close().await;
    if adapters.is_empty() {
        adapters.push(("base".into(), None));
    }
    let json = a.json;
    let several = adapters.len() > 1;
    let answers =
        tokio::task::spawn_blocking(move || -> Result<Vec<serde_json::Value>, InferenceError> {
            let ids =
                inference::chat_prompt(&loaded.source, &a.prompt, a.system.as_deref(), a.raw)?;
            let mut answers = vec![];
            for (name, dir) in &adapters {
                let (model, switch_s) = inference::with_adapter(&loaded, dir.as_deref())?;
                if several && !json {
                    println!("── {name} (adapter applied in {:.1} ms)", switch_s * 1e3);
                }
                let mut out = std::io::stdout().lock();
                let g = inference::chat(&loaded, &model, &ids, &params, |piece| {
                    if !json {
                        let _ = out.write_all(piece.as_bytes());
                        let _ = out.flush();
                    }
                })?;
                drop(out);
                if !json {
                    println!();
                    print_stats(&g);
                }
                let mut v = serde_json::to_value(&g)
                    .map_err(|e| InferenceError::Internal(e.to_string()))?;
                v["adapter"] = serde_json::json!(name);
                v["prompt_ids"] = serde_json::json!(ids);
                v["load_s"] = serde_json::json!(loaded.load_s);
                v["switch_s"] = serde_json::json!(switch_s);
                answers.push(v);
            }
            Ok(answers)
        })
        .await?
        .map_err(inference_error)?;
    if json {
        if several {
            println!("{}", serde_json::json!({ "answers": answers }));
        } else {
            println!("{}", answers[0]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
