//! `whetstone evaluate`: base vs tuned task metrics on a run's held-out records.

use crate::common::{open_store, run_error, UserError};
use std::process::ExitCode;
use whetstone_studio::task_eval::{self, TaskEvalRequest};
use whetstone_studio::task_metrics::TaskMetric;

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// A run id.
    pub run: String,
    /// exact_match, normalized_match, contains, regex, json_valid, json_fields, rouge_l or
    /// chrf (repeatable; default: picked from the reference answers).
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    /// The regex metric's pattern (the whole answer, trimmed, is matched).
    #[arg(long)]
    pub pattern: Option<String>,
    /// Tokens per answer (default: the reference's length + 32).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Only the first N held-out records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples whose answers changed to print (text output).
    #[arg(long, default_value_t = 3)]
    pub show: usize,
    #[arg(long)]
    pub json: bool,
}

pub async fn evaluate(a: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let metrics = a
        .metrics
        .iter()
        .map(|m| TaskMetric::parse(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UserError(format!("--metric: {e}")))?;
    let store = open_store().await?;
    let chatty = !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let req = TaskEvalRequest {
        run: a.run.clone(),
        metrics,
        pattern: a.pattern.clone(),
        max_tokens: a.max_tokens,
        limit: a.limit,
    };
    let report = task_eval::evaluate(&store, &req, move |done, total| {
        if chatty {
            eprint!("\ranswering held-out prompts: {done}/{total} (base and tuned)");
            if done == total {
                eprintln!();
            }
        }
    })
    .await
    .map_err(run_error)?;
    store.close().await;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} ({} checkpoint) on {} held-out records · {} answers changed · {:.1}s",
        report.run_id,
        report.checkpoint,
        report.examples.len(),
        report.changed,
        report.seconds
    );
    println!(
        "{:<18} {:>8} {:>8} {:>8}",
        "metric", "base", "tuned", "change"
    );
    for m in &report.metrics {
        println!(
            "{:<18} {:>8.3} {:>8.3} {:>+8.3}",
            m.metric.as_str(),
            m.base,
            m.tuned,
            m.tuned - m.base
        );
    }
    for e in report
        .examples
        .iter()
        .filter(|e| e.base_scores != e.tuned_scores)
        .take(a.show)
    {
        let prompt: String = e
            .prompt
            .chars()
            .rev()
            .take(160)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        println!("\n#{} …{}", e.index, prompt.trim());
        println!("  reference: {}", e.reference);
        println!("  base:      {}", e.base_answer);
        println!("  tuned:     {}", e.tuned_answer);
    }
    Ok(ExitCode::SUCCESS)
}
