//! Task evaluation: did the fine-tune get better at the task? The base model and a run's
//! adapter answer the run's held-out prompts greedily, and each answer is scored against
//! the record's reference answer with task metrics (`task_metrics`). The figures and every
//! example land in the history (`run_task_evals`, `run_task_examples`).
//!
//! A held-out record's prompt is everything before its first trained token (the chat
//! template's rendering up to the assistant's reply), its reference the first trained span
//! decoded; so a multi-turn record is judged on its first answer.

use crate::datasets;
use crate::inference;
use crate::runs::{self, RunError};
use crate::store::Store;
use crate::task_metrics::TaskMetric;
use serde::Serialize;
use std::time::Instant;
use whetstone_engine::{generate, SamplingParams};

/// What to evaluate and how.
#[derive(Debug, Clone, Default)]
pub struct TaskEvalRequest {
    pub run: String,
    /// Empty: picked from the references (`TaskMetric::pick`).
    pub metrics: Vec<TaskMetric>,
    /// The `regex` metric's pattern.
    pub pattern: Option<String>,
    /// Tokens each answer may have (default: the reference's length + 32).
    pub max_tokens: Option<usize>,
    /// Only the first N held-out records.
    pub limit: Option<usize>,
}

/// One metric, base against tuned (means over the examples).
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct MetricPair {
    pub metric: TaskMetric,
    pub base: f64,
    pub tuned: f64,
}

/// One held-out record: both answers and their scores (in `metrics` order).
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct TaskExample {
    pub index: usize,
    pub prompt: String,
    pub reference: String,
    pub base_answer: String,
    pub tuned_answer: String,
    pub base_scores: Vec<f64>,
    pub tuned_scores: Vec<f64>,
}

/// `whetstone evaluate --json`, and what the run screen shows.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct TaskEvalReport {
    pub run_id: String,
    pub checkpoint: String,
    pub metrics: Vec<MetricPair>,
    pub examples: Vec<TaskExample>,
    /// Examples whose base and tuned answers differ.
    pub changed: usize,
    pub seconds: f64,
}

fn user(m: impl Into<String>) -> RunError {
    RunError::User(m.into())
}

/// A held-out row split into its prompt ids and its reference answer's ids.
fn split_row(row: &whetstone_data::Tokenized) -> Option<(Vec<u32>, Vec<u32>)> {
    let first = row.trained.iter().position(|&t| t)?;
    let end = row.trained[first..]
        .iter()
        .position(|&t| !t)
        .map_or(row.ids.len(), |n| first + n);
    Some((row.ids[..first].to_vec(), row.ids[first..end].to_vec()))
}

/// Evaluate run `req.run`'s best (else last) checkpoint against the base on its held-out
/// records, store the result in the history and return it. `progress(done, total)`.
pub async fn evaluate(
    store: &Store,
    req: &TaskEvalRequest,
    mut progress: impl FnMut(usize, usize) + Send + 'static,
) -> Result<TaskEvalReport, RunError> {
    let started = Instant::now();
    let run = runs::get(store, &req.run)
        .await?
        .ok_or_else(|| user(format!("no run `{}` (see `whetstone runs list`)", req.run)))?;
    let cfg = run.config()?;
    let ckpt = runs::adapter_dir(store, &run.id).await?;
    let checkpoint = ckpt
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dataset = datasets::get(store, &run.dataset_id)
        .await?
        .ok_or_else(|| user(format!("run {}: its dataset is gone", run.id)))?;
    let pattern = match (&req.pattern, req.metrics.contains(&TaskMetric::Regex)) {
        (Some(p), _) => {
            Some(regex::Regex::new(p).map_err(|e| user(format!("--pattern `{p}`: {e}")))?)
        }
        (None, true) => return Err(user("the regex metric needs --pattern")),
        (None, false) => None,
    };
    let req = req.clone();
    let run_id = run.id.clone();
    let model_path = std::path::PathBuf::from(&run.model_path);
    let (metrics, examples) = tokio::task::spawn_blocking(move || {
        let nf4 = cfg.method.spec().facts().quantizes_base;
        let loaded = inference::load_in(&model_path, &cfg.device, None, nf4, &cfg.dtype)
            .map_err(|e| user(e.to_string()))?;
        let (tuned, _) =
            inference::with_adapter(&loaded, Some(&ckpt)).map_err(|e| user(e.to_string()))?;
        let data = dataset.load()?;
        let prepared = runs::prepare_data(
            &loaded.source,
            &data,
            &dataset.original_path,
            &cfg,
            &mut vec![],
        )?;
        let tok = &loaded.source.tokenizer;
        let mut rows: Vec<(Vec<u32>, Vec<u32>)> =
            prepared.eval.iter().filter_map(split_row).collect();
        if let Some(n) = req.limit {
            rows.truncate(n);
        }
        if rows.is_empty() {
            return Err(user(format!(
                "run {run_id} holds out no records with an answer (`eval_fraction` is {})",
                cfg.eval_fraction
            )));
        }
        let decode = |ids: &[u32]| tok.decode(ids, true).unwrap_or_default().trim().to_string();
        let references: Vec<String> = rows.iter().map(|(_, r)| decode(r)).collect();
        let metrics = if req.metrics.is_empty() {
            TaskMetric::pick(&references.iter().map(String::as_str).collect::<Vec<_>>())
        } else {
            req.metrics.clone()
        };
        let mut examples = vec![];
        for (i, ((prompt, answer_ids), reference)) in rows.iter().zip(&references).enumerate() {
            let max = req.max_tokens.unwrap_or(answer_ids.len() + 32);
            let params = SamplingParams::greedy(max);
            let answer = |m| -> Result<String, RunError> {
                let g = generate(m, tok, prompt, &params, |_| {})
                    .map_err(|e| RunError::Internal(e.to_string()))?;
                Ok(g.text.trim().to_string())
            };
            let (base_answer, tuned_answer) = (answer(&loaded.model)?, answer(&tuned)?);
            let score = |a: &str| -> Result<Vec<f64>, RunError> {
                metrics
                    .iter()
                    .map(|m| m.score(a, reference, pattern.as_ref()).map_err(user))
                    .collect()
            };
            examples.push(TaskExample {
                index: i,
                prompt: tok.decode(prompt, true).unwrap_or_default(),
                reference: reference.clone(),
                base_scores: score(&base_answer)?,
                tuned_scores: score(&tuned_answer)?,
                base_answer,
                tuned_answer,
            });
            progress(i + 1, rows.len());
        }
        Ok::<_, RunError>((metrics, examples))
    })
    .await
    .map_err(|e| RunError::Internal(e.to_string()))??;
    let n = examples.len() as f64;
    let pairs: Vec<MetricPair> = metrics
        .iter()
        .enumerate()
        .map(|(k, m)| MetricPair {
            metric: m.clone(),
            base: examples.iter().map(|e| e.base_scores[k]).sum::<f64>() / n,
            tuned: examples.iter().map(|e| e.tuned_scores[k]).sum::<f64>() / n,
        })
        .collect();
    let report = TaskEvalReport {
        run_id: run.id.clone(),
        checkpoint,
        changed: examples
            .iter()
            .filter(|e| e.base_answer != e.tuned_answer)
            .count(),
        metrics: pairs,
        examples,
        seconds: started.elapsed().as_secs_f64(),
    };
    save(store, &report).await?;
    Ok(report)
}

/// Every run's stored task metrics, by run id (metrics in the order they were measured).
pub async fn stored(
    store: &Store,
    run: Option<&str>,
) -> Result<std::collections::HashMap<String, Vec<MetricPair>>, RunError> {
    let rows: Vec<(String, String, f64, f64)> = sqlx::query_as(
        "SELECT run_id, metric, base, tuned FROM run_task_evals WHERE ?1 IS NULL OR run_id = ?1 ORDER BY rowid",
    )
    .bind(run)
    .fetch_all(store.pool())
    .await?;
    let mut out: std::collections::HashMap<String, Vec<MetricPair>> = Default::default();
    for (id, metric, base, tuned) in rows {
        if let Ok(metric) = TaskMetric::parse(&metric) {
            out.entry(id).or_default().push(MetricPair {
                metric,
                base,
                tuned,
            });
        }
    }
    Ok(out)
}

/// Replace the run's stored task evaluation with this one, in one transaction.
async fn save(store: &Store, r: &TaskEvalReport) -> Result<(), RunError> {
    let mut tx = store.pool().begin().await?;
    for table in ["run_task_evals", "run_task_examples"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE run_id = ?"))
            .bind(&r.run_id)
            .execute(&mut *tx)
            .await?;
    }
    for m in &r.metrics {
        sqlx::query(
            "INSERT INTO run_task_evals (run_id, metric, base, tuned, examples, checkpoint) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.run_id)
        .bind(m.metric.as_str())
        .bind(m.base)
        .bind(m.tuned)
        .bind(r.examples.len() as i64)
        .bind(&r.checkpoint)
        .execute(&mut *tx)
        .await?;
    }
    for e in &r.examples {
        sqlx::query(
            "INSERT INTO run_task_examples (run_id, idx, prompt, reference, base_answer, tuned_answer, base_scores, tuned_scores)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.run_id)
        .bind(e.index as i64)
        .bind(&e.prompt)
        .bind(&e.reference)
        .bind(&e.base_answer)
        .bind(&e.tuned_answer)
        .bind(serde_json::to_string(&e.base_scores).unwrap_or_default())
        .bind(serde_json::to_string(&e.tuned_scores).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_splits_into_prompt_and_first_answer() {
        let row = whetstone_data::Tokenized {
            ids: vec![1, 2, 3, 4, 5, 6, 7],
            trained: vec![false, false, true, true, false, true, false],
            ..Default::default()
        };
        assert_eq!(split_row(&row), Some((vec![1, 2], vec![3, 4])));
        let none = whetstone_data::Tokenized {
            ids: vec![1, 2],
            trained: vec![false, false],
            ..Default::default()
        };
        assert_eq!(split_row(&none), None);
    }
}
