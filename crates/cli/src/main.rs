//! `whetstone`: the studio without a window. Wires arguments to the studio crate and prints.
//!
//! Exit codes: 0 success, 1 user error (one line on stderr naming the file/field), 2 internal.

mod doctor;
mod infer;
mod models;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use whetstone_studio::SamplingParams;

#[derive(Parser)]
#[command(
    name = "whetstone",
    version,
    about = "Fine-tune language models on your own machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Versions, devices, data directory and whether the demo model is present.
    Doctor {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Register and list models (HF folders and GGUF files).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Mean next-token negative log-likelihood of a text under a model.
    Score {
        /// A registered model id, an HF model folder or a .gguf file.
        #[arg(long)]
        model: String,
        /// UTF-8 text to score, tokenized as the model's tokenizer does (no chat template).
        #[arg(long)]
        text_file: PathBuf,
        /// cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long)]
        json: bool,
    },
    /// Talk to a model: the prompt goes through its chat template; the answer streams.
    Chat {
        /// A registered model id, an HF model folder or a .gguf file.
        #[arg(long)]
        model: String,
        prompt: String,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// 0 = greedy decoding.
        #[arg(long, default_value_t = 0.3)]
        temperature: f64,
        /// Keep the k most likely tokens (0 = off).
        #[arg(long, default_value_t = 50)]
        top_k: usize,
        /// Keep the most likely tokens up to this probability mass (1 = off).
        #[arg(long, default_value_t = 0.9)]
        top_p: f64,
        #[arg(long, default_value_t = 1.1)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Stop when the answer contains this text (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// A system message for the chat template.
        #[arg(long)]
        system: Option<String>,
        /// Send the prompt as raw text, without the chat template.
        #[arg(long)]
        raw: bool,
        /// cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print one JSON object (prompt and answer token ids, text, speed) instead of streaming.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Validate and register a model: an HF folder or a .gguf file.
    Add {
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// The registered models.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// An error the user can fix (exit 1), as opposed to a bug (exit 2).
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UserError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Doctor { json } => doctor::run(json).await,
            Command::Models { command } => match command {
                ModelsCommand::Add { reference, json } => models::add(&reference, json).await,
                ModelsCommand::List { json } => models::list(json).await,
            },
            Command::Score {
                model,
                text_file,
                device,
                json,
            } => infer::score(&model, &text_file, &device, json).await,
            Command::Chat {
                model,
                prompt,
                max_tokens,
                temperature,
                top_k,
                top_p,
                repetition_penalty,
                seed,
                stop,
                system,
                raw,
                device,
                json,
            } => {
                infer::chat(infer::ChatArgs {
                    model,
                    prompt,
                    system,
                    raw,
                    device,
                    json,
                    params: SamplingParams {
                        max_tokens,
                        temperature,
                        top_k: (top_k > 0).then_some(top_k),
                        top_p: (top_p < 1.0).then_some(top_p),
                        repetition_penalty,
                        seed,
                        stop_strings: stop,
                    },
                })
                .await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UserError>().is_some() => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
