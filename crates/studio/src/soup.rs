//! Model soups: a new run whose change to the base is the mean of other runs' changes
//! (Wortsman et al., 2022), measured on the eval split the ingredients share.
//!
//! - **uniform**: every ingredient, weight `1/N`.
//! - **greedy** (the paper's recipe): ingredients sorted by eval loss; starting from the best,
//!   each is added only if the soup's eval loss does not get worse. By construction its eval
//!   loss is never above its best ingredient's.
//!
//! Every number is measured the same way: the soup (or an ingredient alone, as a soup of one)
//! is written as an adapter folder, loaded onto the base as any adapter is, and evaluated as
//! the training loop evaluates (`whetstone_engine::train::eval_loss`). The tensor math is in
//! `whetstone_engine::soup`. The soup is a run of kind `soup` in the history: it compares,
//! plays and exports like any other run.

use crate::datasets::{self, DatasetRecord};
use crate::inference;
use crate::paths::DataDir;
use crate::run_state::RunState;
use crate::runs::{self, RunError, RunRecord};
use crate::store::Store;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use whetstone_engine::methods::{PEFT_FILE, TRAINABLE_FILE};
use whetstone_engine::{MethodKind, TrainConfig};

/// One ingredient as the soup saw it.
#[derive(Debug, Clone, Serialize, Deserialize, ts_rs::TS)]
#[ts(export)]
pub struct Ingredient {
    pub run_id: String,
    /// Its eval loss on the shared split, measured as the soup's is.
    pub eval_loss: f64,
    /// Whether the soup holds it (a greedy soup leaves out those that made it worse).
    pub used: bool,
    /// Its weight in the mean (0 when not used).
    pub weight: f64,
    /// The checkpoint taken: `best` or `last`.
    pub checkpoint: String,
}

/// What a soup run is made of (`runs.soup`).
#[derive(Debug, Clone, Serialize, Deserialize, ts_rs::TS)]
#[ts(export)]
pub struct SoupRecipe {
    /// `uniform` or `greedy`.
    pub recipe: String,
    /// Best eval loss first.
    pub ingredients: Vec<Ingredient>,
    /// The base model's eval loss on the same split.
    pub base_eval_loss: f64,
}

/// `whetstone soup --json`'s last line, and what the window shows.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct SoupReport {
    pub run_id: String,
    pub eval_loss: f64,
    pub recipe: String,
    pub ingredients: Vec<Ingredient>,
    pub base_eval_loss: f64,
    pub seconds: f64,
}

/// How a method's weight change can be averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Plain LoRA factors; `nf4`: trained over QLoRA's NF4 base.
    Lora { nf4: bool },
    /// The trained tensors themselves (the change is linear in them).
    Tensors(MethodKind),
}

fn family(m: MethodKind) -> Result<Family, String> {
    use MethodKind::*;
    let why = match m {
        Lora | LoraPlus => return Ok(Family::Lora { nf4: false }),
        Qlora => return Ok(Family::Lora { nf4: true }),
        Full | Freeze | Bitfit | Ia3 => return Ok(Family::Tensors(m)),
        Dora => "DoRA rescales each weight by a learned magnitude over its norm, so the mean of DoRA runs' changes is no DoRA adapter",
        PromptTuning | PrefixTuning | PTuningV2 => {
            "it adds virtual tokens instead of changing weights, so there is no weight change to average"
        }
        Adapter => "Houlsby adapters are non-linear layers; the mean of their weights is not the mean of their effect",
    };
    Err(format!("a `{}` run cannot go in a soup: {why}", m.as_str()))
}

fn user(m: impl Into<String>) -> RunError {
    RunError::User(m.into())
}

fn internal(e: impl std::fmt::Display) -> RunError {
    RunError::Internal(e.to_string())
}

/// The settings that decide which records are held out and how they are scored: runs
/// that differ in one were measured on different eval splits.
fn split_keys(run: &RunRecord, cfg: &TrainConfig) -> Vec<(&'static str, String)> {
    vec![
        ("dataset", run.dataset_sha256.clone().unwrap_or_default()),
        ("objective", cfg.objective.as_str().to_string()),
        ("eval_fraction", cfg.eval_fraction.to_string()),
        ("split_seed", cfg.split_seed().to_string()),
        ("seq_len", cfg.seq_len.to_string()),
        ("truncate", cfg.truncate.to_string()),
        ("packing", cfg.packing.to_string()),
        ("train_on_prompt", cfg.train_on_prompt.to_string()),
    ]
}

/// The ingredients after every check, with their configs and checkpoint folders.
struct Checked {
    runs: Vec<(RunRecord, TrainConfig, PathBuf, String)>,
    family: Family,
    dataset: DatasetRecord,
}

async fn check(store: &Store, ids: &[String]) -> Result<Checked, RunError> {
    if ids.len() < 2 {
        return Err(user("a soup needs at least two runs"));
    }
    if let Some(dup) = ids
        .iter()
        .enumerate()
        .find(|(i, id)| ids[..*i].contains(id))
    {
        return Err(user(format!("run {} is named twice", dup.1)));
    }
    let mut out: Vec<(RunRecord, TrainConfig, PathBuf, String)> = vec![];
    let mut fam = None;
    for id in ids {
        let run = runs::get(store, id)
            .await?
            .ok_or_else(|| user(format!("no run `{id}` (see `whetstone runs list`)")))?;
        if run.status == RunState::Running {
            return Err(user(format!(
                "run {id} is still training; make the soup when it has finished"
            )));
        }
        let cfg = run.config()?;
        let f = family(cfg.method).map_err(|e| user(format!("run {id}: {e}")))?;
        let ckpt_root = Path::new(&run.run_dir).join("checkpoints");
        let (which, dir) = ["best", "last"]
            .iter()
            .map(|n| (n.to_string(), ckpt_root.join(n)))
            .find(|(_, d)| d.join("state.json").exists())
            .ok_or_else(|| user(format!("run {id} has no checkpoint yet")))?;
        if let Some((first, first_cfg, _, _)) = out.first() {
            let prev = fam.expect("set with the first");
            if f != prev {
                let what = match (f, prev) {
                    (Family::Lora { .. }, Family::Lora { .. }) => {
                        "QLoRA trains over an NF4 copy of the base, LoRA over the base itself: their changes are to different weights".to_string()
                    }
                    _ => format!(
                        "{} and {} change different things; a soup averages runs of one method family",
                        first_cfg.method.as_str(),
                        cfg.method.as_str()
                    ),
                };
                return Err(user(format!("runs {} and {id}: {what}", first.id)));
            }
            if first.model_path != run.model_path {
                return Err(user(format!(
                    "runs {} and {id} fine-tuned different base models ({} and {}); a soup averages changes to one base",
                    first.id, first.model_path, run.model_path
                )));
            }
            let (a, b) = (split_keys(first, first_cfg), split_keys(&run, &cfg));
            if let Some(((key, x), (_, y))) = a.iter().zip(&b).find(|(x, y)| x.1 != y.1) {
                return Err(user(format!(
                    "runs {} and {id} hold out different eval records (`{key}`: {x} vs {y}); a soup is measured on the split its ingredients share — sweep `seed` (a sweep keeps `split_seed` fixed) or give the runs the same `split_seed`",
                    first.id
                )));
            }
        }
        fam = Some(f);
        out.push((run, cfg, dir, which));
    }
    let dataset = datasets::get(store, &out[0].0.dataset_id)
        .await?
        .ok_or_else(|| user(format!("run {}: its dataset is gone", out[0].0.id)))?;
    Ok(Checked {
        runs: out,
        family: fam.expect("at least two runs"),
        dataset,
    })
}

/// The trained tensors of a checkpoint (every weights file but the optimizer's).
fn checkpoint_tensors(dir: &Path) -> Result<HashMap<String, Tensor>, RunError> {
    let mut all = HashMap::new();
    for name in [TRAINABLE_FILE, PEFT_FILE] {
        let f = dir.join(name);
        if f.exists() {
            let t = candle_core::safetensors::load(&f, &candle_core::Device::Cpu)
                .map_err(|e| user(format!("{}: {e}", f.display())))?;
            all.extend(t.into_iter().map(|(k, v)| (format!("{name}/{k}"), v)));
        }
    }
    Ok(all)
}

/// Everything a measurement needs, built once.
struct Kitchen<'a> {
    loaded: inference::Loaded,
    cfg: &'a TrainConfig,
    eval: Vec<whetstone_data::Tokenized>,
    family: Family,
    /// Per ingredient: its model (LoRA) or its trained tensors (the others).
    models: Vec<whetstone_engine::DecoderModel>,
    tensors: Vec<HashMap<String, Tensor>>,
    /// The first ingredient's checkpoint, for its `adapter_config.json`.
    template: PathBuf,
    staging: PathBuf,
    written: usize,
}

impl Kitchen<'_> {
    /// Write the soup of `members` (equal weights) as an adapter folder; returns the folder
    /// and how many parameters it holds.
    fn write(&mut self, members: &[usize]) -> Result<(PathBuf, usize), RunError> {
        self.written += 1;
        let dir = self.staging.join(format!("candidate-{}", self.written));
        std::fs::create_dir_all(&dir).map_err(|e| internal(format!("{}: {e}", dir.display())))?;
        let w = vec![1.0 / members.len() as f64; members.len()];
        let mut files: HashMap<&str, HashMap<String, Tensor>> = HashMap::new();
        let mut params = 0;
        match self.family {
            Family::Lora { .. } => {
                let models: Vec<_> = members.iter().map(|&i| &self.models[i]).collect();
                let soup = whetstone_engine::soup::lora_soup(&models, &w).map_err(user)?;
                let cfg_path = self.template.join("adapter_config.json");
                let text = std::fs::read_to_string(&cfg_path)
                    .map_err(|e| user(format!("{}: {e}", cfg_path.display())))?;
                let mut c: Value = serde_json::from_str(&text)
                    .map_err(|e| user(format!("{}: {e}", cfg_path.display())))?;
                // one plain LoRA of the summed rank, scale 1 (the ingredients' scales and
                // weights are in B)
                c["r"] = json!(soup.rank);
                c["lora_alpha"] = json!(soup.rank);
                c["use_rslora"] = json!(false);
                c["use_dora"] = json!(false);
                c["target_modules"] = json!(soup.targets);
                c["rank_pattern"] = json!({});
                c["alpha_pattern"] = json!({});
                c["layers_to_transform"] = Value::Null;
                let f = dir.join("adapter_config.json");
                std::fs::write(&f, serde_json::to_string_pretty(&c).map_err(internal)?)
                    .map_err(|e| internal(format!("{}: {e}", f.display())))?;
                params = soup.tensors.iter().map(|(_, t)| t.elem_count()).sum();
                files.insert(PEFT_FILE, soup.tensors.into_iter().collect());
            }
            Family::Tensors(_) => {
                let sets: Vec<_> = members.iter().map(|&i| self.tensors[i].clone()).collect();
                let mean = whetstone_engine::soup::mean_tensors(&sets, &w).map_err(user)?;
                for (name, t) in mean {
                    let (file, key) = name.split_once('/').expect("named file/tensor");
                    let file = if file == PEFT_FILE {
                        PEFT_FILE
                    } else {
                        TRAINABLE_FILE
                    };
                    params += t.elem_count();
                    files.entry(file).or_default().insert(key.to_string(), t);
                }
                let c = self.template.join("adapter_config.json");
                if c.exists() {
                    std::fs::copy(&c, dir.join("adapter_config.json"))
                        .map_err(|e| internal(format!("{}: {e}", c.display())))?;
                }
            }
        }
        for (name, tensors) in files {
            let f = dir.join(name);
            candle_core::safetensors::save(&tensors, &f)
                .map_err(|e| internal(format!("{}: {e}", f.display())))?;
        }
        Ok((dir, params))
    }

    /// The eval loss of an adapter folder on the shared split.
    fn measure(&self, dir: &Path) -> Result<f64, RunError> {
        let (model, _) =
            inference::with_adapter(&self.loaded, Some(dir)).map_err(|e| user(e.to_string()))?;
        whetstone_engine::train::eval_loss(&model, self.cfg, &self.eval)
            .map_err(|e| user(e.to_string()))
    }
}

/// Make a soup of `ids` (uniform, or `greedy`) and register it as a run. `progress` hears
/// what is being measured.
pub async fn make(
    store: &Store,
    dir: &DataDir,
    ids: &[String],
    greedy: bool,
    mut progress: impl FnMut(&str) + Send + 'static,
) -> Result<SoupReport, RunError> {
    let started = Instant::now();
    let checked = check(store, ids).await?;
    let staging = dir.runs().join(format!(
        ".soup-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let stage = staging.clone();
    let family = checked.family;
    let runs_info: Vec<(String, TrainConfig, PathBuf, String)> = checked
        .runs
        .iter()
        .map(|(r, c, d, w)| (r.id.clone(), c.clone(), d.clone(), w.clone()))
        .collect();
    let (model_path, dataset) = (
        PathBuf::from(&checked.runs[0].0.model_path),
        checked.dataset.clone(),
    );
    let cooked = tokio::task::spawn_blocking(move || {
        let out = cook(
            &runs_info,
            family,
            &model_path,
            &dataset,
            &stage,
            greedy,
            &mut progress,
        );
        if out.is_err() {
            let _ = std::fs::remove_dir_all(&stage);
        }
        out
    })
    .await
    .map_err(internal)??;
    let (recipe, folder, loss, params) = cooked;
    let registered = register(store, dir, &checked, &folder, &recipe, loss, params).await;
    let _ = std::fs::remove_dir_all(&staging);
    let run_id = registered?;
    Ok(SoupReport {
        run_id,
        eval_loss: loss,
        recipe: recipe.recipe,
        ingredients: recipe.ingredients,
        base_eval_loss: recipe.base_eval_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}

type Cooked = (SoupRecipe, PathBuf, f64, usize);

/// The measurements and the chosen soup's folder (in `staging`).
fn cook(
    runs_info: &[(String, TrainConfig, PathBuf, String)],
    family: Family,
    model_path: &Path,
    dataset: &DatasetRecord,
    staging: &Path,
    greedy: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Cooked, RunError> {
    let cfg = &runs_info[0].1;
    let nf4 = matches!(family, Family::Lora { nf4: true });
    progress(&format!("loading {}", model_path.display()));
    let loaded = inference::load_in(model_path, &cfg.device, None, nf4, &cfg.dtype)
        .map_err(|e| user(e.to_string()))?;
    let data = dataset.load()?;
    let prepared = runs::prepare_data(
        &loaded.source,
        &data,
        &dataset.original_path,
        cfg,
        &mut vec![],
    )?;
    if prepared.eval.is_empty() {
        return Err(user(format!(
            "run {} holds out no eval records (`eval_fraction` is {}); a soup is chosen and judged by eval loss",
            runs_info[0].0, cfg.eval_fraction
        )));
    }
    let mut models = vec![];
    let mut tensors = vec![];
    for (id, _, dir, _) in runs_info {
        match family {
            Family::Lora { .. } => {
                let (m, _) = inference::with_adapter(&loaded, Some(dir))
                    .map_err(|e| user(format!("run {id}: {e}")))?;
                models.push(m);
            }
            Family::Tensors(_) => tensors.push(checkpoint_tensors(dir)?),
        }
    }
    std::fs::create_dir_all(staging)
        .map_err(|e| internal(format!("{}: {e}", staging.display())))?;
    let mut k = Kitchen {
        loaded,
        cfg,
        eval: prepared.eval,
        family,
        models,
        tensors,
        template: runs_info[0].2.clone(),
        staging: staging.to_path_buf(),
        written: 0,
    };
    progress(&format!(
        "measuring the base on {} held-out records",
        k.eval.len()
    ));
    let base_eval_loss = whetstone_engine::train::eval_loss(&k.loaded.model, cfg, &k.eval)
        .map_err(|e| user(e.to_string()))?;
    // each ingredient as a soup of one, so every number comes from the same construction
    let mut alone = vec![];
    for (i, (id, ..)) in runs_info.iter().enumerate() {
        let (folder, params) = k.write(&[i])?;
        let loss = k.measure(&folder)?;
        progress(&format!("{id}: eval loss {loss:.4}"));
        alone.push((loss, folder, params));
    }
    let mut order: Vec<usize> = (0..runs_info.len()).collect();
    order.sort_by(|&a, &b| alone[a].0.total_cmp(&alone[b].0));
    let (members, folder, loss, params) = if greedy {
        let mut members = vec![order[0]];
        let (mut loss, mut folder, mut params) = alone[order[0]].clone();
        for &next in &order[1..] {
            let mut trial = members.clone();
            trial.push(next);
            let (f, p) = k.write(&trial)?;
            let l = k.measure(&f)?;
            let kept = l <= loss;
            progress(&format!(
                "+ {}: eval loss {l:.4} ({})",
                runs_info[next].0,
                if kept { "kept" } else { "worse, left out" }
            ));
            if kept {
                (members, loss, folder, params) = (trial, l, f, p);
            }
        }
        (members, folder, loss, params)
    } else {
        let all: Vec<usize> = order.clone();
        let (f, p) = k.write(&all)?;
        let l = k.measure(&f)?;
        progress(&format!("uniform soup of {}: eval loss {l:.4}", all.len()));
        (all, f, l, p)
    };
    let ingredients = order
        .iter()
        .map(|&i| Ingredient {
            run_id: runs_info[i].0.clone(),
            eval_loss: alone[i].0,
            used: members.contains(&i),
            weight: if members.contains(&i) {
                1.0 / members.len() as f64
            } else {
                0.0
            },
            checkpoint: runs_info[i].3.clone(),
        })
        .collect();
    let recipe = SoupRecipe {
        recipe: if greedy { "greedy" } else { "uniform" }.into(),
        ingredients,
        base_eval_loss,
    };
    Ok((recipe, folder, loss, params))
}

/// The soup's method: the ingredients' when they agree, else plain LoRA (LoRA and LoRA+
/// differ only in training).
fn soup_method(checked: &Checked) -> MethodKind {
    let first = checked.runs[0].1.method;
    if checked.runs.iter().all(|(_, c, _, _)| c.method == first) {
        first
    } else {
        MethodKind::Lora
    }
}

/// Register the soup: a `soup` run, completed, its folder holding `checkpoints/best`.
async fn register(
    store: &Store,
    dir: &DataDir,
    checked: &Checked,
    folder: &Path,
    recipe: &SoupRecipe,
    loss: f64,
    params: usize,
) -> Result<String, RunError> {
    let method = soup_method(checked);
    // the best ingredient's settings describe the soup's data and evaluation
    let best = &recipe.ingredients[0].run_id;
    let (run0, cfg0) = checked
        .runs
        .iter()
        .find(|(r, ..)| &r.id == best)
        .map(|(r, c, ..)| (r, c))
        .expect("an ingredient");
    let mut cfg = cfg0.clone();
    cfg.method = method;
    let state = whetstone_engine::train::CheckpointState {
        step: 0,
        rows_seen: 0,
        dropout_rng: 0,
        optimizer_step: 0,
        best_eval_loss: Some(loss),
        best_step: Some(0),
        first_eval_loss: Some(recipe.base_eval_loss),
        last_eval_loss: Some(loss),
        evals_without_improvement: 0,
        method,
        total_steps: 0,
        tokens_seen: 0,
    };
    let f = folder.join("state.json");
    std::fs::write(&f, serde_json::to_string_pretty(&state).map_err(internal)?)
        .map_err(|e| internal(format!("{}: {e}", f.display())))?;
    let config = serde_json::to_string(&cfg).map_err(internal)?;
    let model_path = PathBuf::from(&run0.model_path);
    let id = runs::insert_row(
        store,
        dir,
        &runs::RunRow {
            kind: "soup",
            method: method.as_str(),
            model_id: &run0.model_id,
            model_path: &model_path,
            dataset: &checked.dataset,
            config: &config,
        },
    )
    .await?;
    let finish = async {
        let run = runs::get(store, &id)
            .await?
            .ok_or_else(|| internal(format!("run {id} vanished")))?;
        let run_dir = PathBuf::from(&run.run_dir);
        std::fs::create_dir_all(run_dir.join("checkpoints"))
            .map_err(|e| internal(format!("{}: {e}", run_dir.display())))?;
        std::fs::rename(folder, run_dir.join("checkpoints").join("best"))
            .map_err(|e| internal(format!("{}: {e}", run_dir.display())))?;
        runs::write_manifest(
            &run_dir,
            &id,
            &model_path,
            &run0.model_id,
            &checked.dataset,
            &cfg,
        )
        .map_err(user)?;
        let summary = json!({
            "status": "completed",
            "steps_done": 0,
            "best_eval_loss": loss,
            "first_eval_loss": recipe.base_eval_loss,
            "last_eval_loss": loss,
            "trainable_params": params,
            "message": null,
        });
        let mut tx = store.pool().begin().await?;
        sqlx::query(
            "UPDATE runs SET status = ?, steps_done = 0, total_steps = 0, best_eval_loss = ?, summary = ?, soup = ?,
             finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
        )
        .bind(RunState::Completed)
        .bind(loss)
        .bind(summary.to_string())
        .bind(serde_json::to_string(recipe).map_err(internal)?)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        // its one evaluation, so curves and comparisons show it
        sqlx::query(
            "INSERT OR REPLACE INTO run_metrics (run_id, kind, step, loss, perplexity, time_s) VALUES (?, 'eval', 0, ?, ?, 0)",
        )
        .bind(&id)
        .bind(loss)
        .bind(loss.exp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok::<(), RunError>(())
    };
    if let Err(e) = finish.await {
        // nothing half-made: the row goes with its folder
        let _ = sqlx::query("DELETE FROM runs WHERE id = ?")
            .bind(&id)
            .execute(store.pool())
            .await;
        let _ = std::fs::remove_dir_all(dir.runs().join(&id));
        return Err(e);
    }
    Ok(id)
}
