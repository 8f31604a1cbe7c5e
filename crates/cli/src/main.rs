//! `whetstone`: the studio without a window. Wires arguments to the studio crate and prints.
//!
//! Exit codes: 0 success, 1 user error (one line on stderr naming the file/field), 2 internal.

mod common;
mod datasets;
mod doctor;
mod evaluate;
mod export;
mod infer;
mod methods;
mod models;
mod runs;
mod serve;
mod sweep;
mod train;

use clap::{Parser, Subcommand};
use common::UserError;

/// Training allocates and frees many large tensors per step; the system allocator returns
/// them to the OS each time and pays page faults to get them back, mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// The Hugging Face hub: what a model would download, and the token for gated models.
    Hub {
        #[command(subcommand)]
        command: HubCommand,
    },
    /// Register, list and inspect datasets (alpaca, chat, ShareGPT, text, CSV/TSV, preference pairs, KTO ratings).
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
    /// Fine-tune a model on a dataset: a progress bar, or NDJSON events with --json.
    Train(train::TrainArgs),
    /// The method comparison table with live numbers for a model on this machine.
    Methods {
        /// A registered model id, an HF model folder or a .gguf file (default: the demo model).
        #[arg(long)]
        model: Option<String>,
        /// cpu, cuda:N or metal (default: the first GPU, else the CPU).
        #[arg(long)]
        device: Option<String>,
        /// Run settings every row uses, e.g. batch_size=8 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Trainable parameters and peak memory of one method before training.
    Estimate {
        #[arg(long)]
        model: String,
        #[arg(long)]
        method: String,
        #[arg(long)]
        device: Option<String>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Measure NF4's resident bytes per parameter (bench/qlora_memory.py).
    #[command(hide = true)]
    MeasureNf4 {
        #[arg(long, default_value_t = 576)]
        rows: usize,
        #[arg(long, default_value_t = 1536)]
        cols: usize,
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
    /// Run history: list, show, compare and delete runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Continue a stopped or killed run from its last checkpoint, exactly.
    Resume {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Export a run's adapter: a PEFT folder, a merged HF model, GGUF (llama.cpp adapter or
    /// merged model) or an Ollama folder. Written to a staging folder and renamed into place.
    Export {
        run: String,
        /// peft, merged, gguf or ollama.
        #[arg(long)]
        format: String,
        /// Destination folder (default: <data dir>/exports/<run>-<format>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// best or last (default: best, else last).
        #[arg(long)]
        checkpoint: Option<String>,
        /// Storage type: merged f32|f16|bf16 (default: the base's), GGUF f32|f16|q8_0
        /// (default: f32 adapters, f16 models).
        #[arg(long)]
        dtype: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Train the demo model on the sample data with LoRA and show what changed.
    Demo {
        #[arg(long, default_value_t = 20)]
        steps: u64,
        #[arg(long)]
        json: bool,
    },
    /// Mean next-token negative log-likelihood of a text under a model.
    Score(infer::ScoreArgs),
    /// Talk to a model: the prompt goes through its chat template; the answer streams.
    Chat(infer::ChatArgs),
    /// Serve the model and its adapters over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Train one model, dataset and method under several settings (a grid and/or random
    /// draws), one run after another through the queue; the runs share their eval split.
    Sweep(sweep::SweepArgs),
    /// Task metrics on a run's held-out records: the base's answers and the run's, each
    /// scored against the reference answer (exact / normalised match, contains, regex, JSON
    /// validity and fields, ROUGE-L, chrF), kept in the history.
    Evaluate(evaluate::EvaluateArgs),
    /// Average finished runs of one base and method family into one model (a model soup),
    /// measured on their shared eval split and kept as a new run.
    Soup {
        /// Two or more run ids.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<String>,
        /// Greedy soup: add each run (best eval loss first) only if the soup does not get worse.
        #[arg(long)]
        greedy: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Validate and register a model: an HF folder or a .gguf file (used where it is), or
    /// hf:owner/name (downloaded into the data directory).
    Add {
        reference: String,
        /// Copy a local folder or GGUF file into the data directory instead of using it in place.
        #[arg(long)]
        copy: bool,
        #[arg(long)]
        json: bool,
    },
    /// The registered models.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Small instruction models that fine-tune on consumer hardware, with their memory needs.
    Curated {
        /// cpu, cuda, cuda:N or metal (default: the best one found).
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum HubCommand {
    /// Size, licence, gating and the files `models add hf:owner/name` would fetch.
    Info {
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// Store a hub token (read from stdin) in the OS keychain, for gated models.
    Login,
    /// Remove the stored hub token.
    Logout,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Every run, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One run: status, config, losses, speed, memory.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Runs side by side (metrics; with --json also the curves by step).
    Compare {
        #[arg(required = true, num_args = 2..)]
        ids: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// A Markdown report with loss charts (SVG and PNG) comparing runs.
    Report {
        #[arg(required = true, num_args = 2..)]
        ids: Vec<String>,
        /// Folder to write report.md and the charts into.
        #[arg(long)]
        out: PathBuf,
        /// Align the curves by `step` or by `tokens` trained on.
        #[arg(long, default_value = "step")]
        by: String,
        #[arg(long)]
        json: bool,
    },
    /// Ask the process training a run to checkpoint and pause it (`whetstone resume` continues).
    Pause {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Ask the process training a run to checkpoint and stop it.
    Stop {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Add tags to a run.
    Tag {
        id: String,
        #[arg(required = true)]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove tags from a run.
    Untag {
        id: String,
        #[arg(required = true)]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set a run's notes ("" clears them).
    Note {
        id: String,
        text: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a run's history and its folder (checkpoints included).
    Delete {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The sweeps: their runs finished and their best run.
    Sweeps {
        #[arg(long)]
        json: bool,
    },
    /// One sweep's runs ranked by best eval loss, with their settings.
    Sweep {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Validate and register a dataset file; the format is detected unless given.
    Add {
        file: PathBuf,
        /// alpaca, chat, sharegpt, text, csv, preference or kto.
        #[arg(long)]
        format: Option<String>,
        /// CSV/TSV columns, e.g. prompt=question,response=answer (or text=body).
        #[arg(long)]
        columns: Option<String>,
        /// Skip invalid records (each is reported) instead of refusing the file.
        #[arg(long)]
        drop_invalid: bool,
        #[arg(long)]
        json: bool,
    },
    /// The registered datasets.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Details, dropped records, a preview and (with --model) token statistics.
    Show {
        id: String,
        /// Render the preview through this model's chat template and count its tokens.
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        #[arg(long)]
        json: bool,
    },
}

/// mimalloc's `mi_option_purge_delay` (its v2 option enum): -1 keeps freed pages instead of
/// handing them back to the OS after 10 ms. A training step frees and reallocates gigabytes;
/// purging made the kernel zero those pages again on every step (a quarter of the time).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // SAFETY: sets a process-wide allocator option before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
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
            Command::Hub { command } => match command {
                HubCommand::Info { reference, json } => models::hub_info(&reference, json).await,
                HubCommand::Login => models::hub_login(),
                HubCommand::Logout => models::hub_logout(),
            },
            Command::Models { command } => match command {
                ModelsCommand::Add {
                    reference,
                    copy,
                    json,
                } => models::add(&reference, copy, json).await,
                ModelsCommand::List { json } => models::list(json).await,
                ModelsCommand::Curated { device, json } => models::curated(device.as_deref(), json),
            },
            Command::Datasets { command } => match command {
                DatasetsCommand::Add {
                    file,
                    format,
                    columns,
                    drop_invalid,
                    json,
                } => {
                    datasets::add(
                        &file,
                        format.as_deref(),
                        columns.as_deref(),
                        drop_invalid,
                        json,
                    )
                    .await
                }
                DatasetsCommand::List { json } => datasets::list(json).await,
                DatasetsCommand::Show {
                    id,
                    model,
                    seq_len,
                    json,
                } => datasets::show(&id, model.as_deref(), seq_len, json).await,
            },
            Command::Train(a) => train::train(a).await,
            Command::Methods {
                model,
                device,
                sets,
                json,
            } => methods::methods(model.as_deref(), device.as_deref(), &sets, json).await,
            Command::Estimate {
                model,
                method,
                device,
                sets,
                json,
            } => methods::estimate(&model, &method, device.as_deref(), &sets, json).await,
            Command::MeasureNf4 { rows, cols, count } => {
                let (bytes, params) =
                    whetstone_studio::measure_nf4(rows, cols, count).map_err(UserError)?;
                println!(
                    "{}",
                    serde_json::json!({"resident_bytes": bytes, "params": params,
                        "bits_per_param": 8.0 * bytes as f64 / params as f64})
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Runs { command } => match command {
                RunsCommand::List { json } => runs::list(json).await,
                RunsCommand::Show { id, json } => runs::show(&id, json).await,
                RunsCommand::Compare { ids, json } => runs::compare(&ids, json).await,
                RunsCommand::Delete { id, json } => runs::delete(&id, json).await,
                RunsCommand::Sweeps { json } => sweep::list(json).await,
                RunsCommand::Sweep { id, json } => sweep::show(&id, json).await,
                RunsCommand::Pause { id, json } => {
                    runs::control(&id, whetstone_studio::history::Control::Pause, json).await
                }
                RunsCommand::Stop { id, json } => {
                    runs::control(&id, whetstone_studio::history::Control::Stop, json).await
                }
                RunsCommand::Tag { id, tags, json } => runs::tag(&id, &tags, true, json).await,
                RunsCommand::Untag { id, tags, json } => runs::tag(&id, &tags, false, json).await,
                RunsCommand::Note { id, text, json } => runs::note(&id, &text, json).await,
                RunsCommand::Report { ids, out, by, json } => {
                    runs::report(&ids, &out, &by, json).await
                }
            },
            Command::Resume { run, json } => train::resume(&run, json).await,
            Command::Demo { steps, json } => train::demo(steps, json).await,
            Command::Export {
                run,
                format,
                out,
                checkpoint,
                dtype,
                json,
            } => export::run(run, &format, out, checkpoint, dtype, json).await,
            Command::Score(a) => infer::score(a).await,
            Command::Chat(a) => infer::chat(a).await,
            Command::Serve(a) => serve::serve(a).await,
            Command::Sweep(a) => sweep::sweep(a).await,
            Command::Evaluate(a) => evaluate::evaluate(a).await,
            Command::Soup { runs, greedy, json } => sweep::soup(&runs, greedy, json).await,
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
