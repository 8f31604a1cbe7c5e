//! The training loop: batches in, updates out, events on the way.
//!
//! Synchronous; the caller runs it on its own thread and listens to [`TrainEvent`]s.
//! Everything that decides the loss curve — the trainable values, the optimizer moments,
//! the dropout stream and the data cursor — is in each checkpoint, so a run resumed from
//! one continues with the very losses the uninterrupted run had.

use crate::config::{MethodKind, TrainConfig};
use crate::generate::{generate, SamplingParams};
use crate::methods;
use crate::model::DecoderModel;
use crate::ops::{self, Ops};
use crate::optim::{self, AdamW, AdamWSettings, Param};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use whetstone_data::dataset::permutation;
use whetstone_data::Tokenized;
use whetstone_formats::ModelTokenizer;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ts_rs::TS)]
#[serde(tag = "event", rename_all = "snake_case")]
#[ts(export)]
pub enum TrainEvent {
    Started {
        /// 0, or the checkpoint's step when resuming.
        step: u64,
        total_steps: u64,
        train_records: usize,
        eval_records: usize,
        trainable_params: usize,
        total_params: usize,
        resumed_from: Option<u64>,
    },
    Step {
        step: u64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_s: f64,
        mem_bytes: u64,
        epoch: f64,
        /// Tokens trained on so far (padding excluded), for curves aligned by tokens.
        tokens: u64,
    },
    Eval {
        step: u64,
        eval_loss: f64,
        perplexity: f64,
    },
    Sample {
        step: u64,
        prompt: String,
        text: String,
    },
    Checkpoint {
        step: u64,
        path: String,
        best: bool,
    },
    Log {
        step: u64,
        level: String,
        message: String,
    },
    Finished {
        step: u64,
        status: RunStatus,
        summary: Summary,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum RunStatus {
    Completed,
    Cancelled,
    /// The loss became NaN or infinite; nothing after the last checkpoint was kept.
    Diverged,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Diverged => "diverged",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ts_rs::TS)]
#[ts(export)]
pub struct Summary {
    pub steps_done: u64,
    pub total_steps: u64,
    pub first_eval_loss: Option<f64>,
    pub last_eval_loss: Option<f64>,
    pub best_eval_loss: Option<f64>,
    pub best_step: Option<u64>,
    pub final_train_loss: Option<f64>,
    pub tokens_per_s: f64,
    pub peak_mem_bytes: u64,
    pub elapsed_s: f64,
    pub trainable_params: usize,
    pub total_params: usize,
    pub stopped_early: bool,
    pub message: Option<String>,
}

/// Tokenized examples, already split.
pub struct TrainData {
    pub train: Vec<Tokenized>,
    pub eval: Vec<Tokenized>,
}

pub struct TrainSpec<'a> {
    pub config: TrainConfig,
    pub data: TrainData,
    /// Where checkpoints go (`<run_dir>/checkpoints/{last,best}`).
    pub run_dir: PathBuf,
    /// Continue from this checkpoint folder.
    pub resume_from: Option<PathBuf>,
    pub cancel: Arc<AtomicBool>,
    /// For `Sample` events.
    pub tokenizer: Option<&'a ModelTokenizer>,
    /// Write the gradients of the first optimizer step (and its batch) here, then stop.
    pub dump_first_grads: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Io(String),
}

/// What a checkpoint folder's `state.json` holds besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub step: u64,
    /// Training rows consumed so far (epochs × rows + position).
    pub rows_seen: u64,
    pub dropout_rng: u64,
    pub optimizer_step: u64,
    pub best_eval_loss: Option<f64>,
    pub best_step: Option<u64>,
    pub first_eval_loss: Option<f64>,
    #[serde(default)]
    pub last_eval_loss: Option<f64>,
    pub evals_without_improvement: usize,
    pub method: MethodKind,
    pub total_steps: u64,
    /// Tokens trained on so far (absent in checkpoints written before it was counted).
    #[serde(default)]
    pub tokens_seen: u64,
}

/// One micro-batch on the device.
pub struct Batch {
    /// `[b, t]` input ids.
    pub input: Tensor,
    /// Flat `b * t` positions whose next token is a target.
    pub rows: Tensor,
    /// The target ids of those positions.
    pub targets: Tensor,
    pub n_targets: usize,
    /// Real (unpadded) input tokens.
    pub tokens: usize,
}

/// Build a right-padded micro-batch: position `i` predicts token `i + 1` where that token is
/// trained. Padding is never a target and, with causal attention, never seen by real tokens.
pub fn make_batch(rows: &[&Tokenized], device: &Device) -> candle_core::Result<Batch> {
    let t = rows.iter().map(|r| r.ids.len()).max().unwrap_or(1).max(2) - 1;
    let mut input = vec![0u32; rows.len() * t];
    let mut flat = vec![];
    let mut targets = vec![];
    let mut tokens = 0;
    for (b, r) in rows.iter().enumerate() {
        let n = r.ids.len().saturating_sub(1);
        tokens += n;
        for i in 0..n {
            input[b * t + i] = r.ids[i];
            if r.trained[i + 1] {
                flat.push((b * t + i) as u32);
                targets.push(r.ids[i + 1]);
            }
        }
    }
    let n_targets = targets.len();
    Ok(Batch {
        input: Tensor::from_vec(input, (rows.len(), t), device)?,
        rows: Tensor::from_vec(flat, n_targets, device)?,
        targets: Tensor::from_vec(targets, n_targets, device)?,
        n_targets,
        tokens,
    })
}

/// Sum of the next-token NLL over the batch's targets, from final hidden states.
fn nll_sum(model: &DecoderModel, hidden: &Tensor, batch: &Batch) -> candle_core::Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    let picked = hidden.reshape((b * t, h))?.index_select(&batch.rows, 0)?;
    let logits = model.logits(&picked)?;
    let logits = match logits.dtype() {
        DType::F64 | DType::F32 => logits,
        _ => logits.to_dtype(DType::F32)?,
    };
    ops::cross_entropy_rows(&logits, &batch.targets)?.sum_all()
}

fn add_grads(
    params: &[Param],
    store: &candle_core::backprop::GradStore,
    acc: &mut [Option<Tensor>],
) -> candle_core::Result<()> {
    for (i, p) in params.iter().enumerate() {
        if let Some(g) = store.get(p.var.as_tensor()) {
            // half-precision gradients are summed in f32, as the optimizer's masters are
            let g = g.to_dtype(ops::wide_dtype(g.dtype()))?;
            acc[i] = Some(match acc[i].take() {
                Some(a) => (a + g)?,
                None => g,
            });
        }
    }
    Ok(())
}

/// Forward and backward of one micro-batch, loss divided by `denom` (the step's target
/// count). Adds the parameter gradients to `acc`; returns the NLL sum.
///
/// With `checkpointing`, layer outputs are not kept: each layer is recomputed during the
/// backward pass from its saved input (replaying the same dropout masks), trading one extra
/// forward for the activation memory of all but one layer.
pub fn forward_backward(
    model: &DecoderModel,
    params: &[Param],
    batch: &Batch,
    denom: f64,
    checkpointing: bool,
    acc: &mut [Option<Tensor>],
) -> candle_core::Result<f64> {
    let ops = Ops::Differentiable;
    if !checkpointing {
        let h = model.hidden_states(&batch.input, 0, None, ops)?;
        let loss = nll_sum(model, &h, batch)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let store = (loss / denom)?.backward()?;
        add_grads(params, &store, acc)?;
        return Ok(value);
    }
    let t = batch.input.dim(1)?;
    let (x0, start, lead) = model.layer_input(&batch.input, 0)?;
    let rope = model.rope_tables(start, x0.dim(1)?)?;
    // prefix tuning: each layer's prefix keys/values, still connected to their parameters,
    // so every replayed layer sends its share of their gradient back
    let prefix = model.prefix_cache(batch.input.dim(0)?)?;
    let slot = |l: usize| prefix.as_ref().map(|c| c.layer(l));
    let mut x = x0.detach();
    let mut inputs = Vec::with_capacity(model.layers.len());
    let mut rng_at = Vec::with_capacity(model.layers.len());
    for l in 0..model.layers.len() {
        inputs.push(x.clone());
        rng_at.push(model.mode.rng_state());
        x = model
            .layer_forward(l, &x, &rope, start, slot(l).as_mut(), ops)?
            .detach();
    }
    let rng_after = model.mode.rng_state();
    let leaf = Var::from_tensor(&x)?;
    let last = leaf.as_tensor().narrow(1, lead, t)?;
    let loss = nll_sum(model, &model.final_norm(&last, ops)?, batch)?;
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let store = (loss / denom)?.backward()?;
    add_grads(params, &store, acc)?;
    let mut grad_out = store
        .get(leaf.as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("no gradient reached the last layer".into()))?;
    for l in (0..model.layers.len()).rev() {
        let input = Var::from_tensor(&inputs[l])?;
        model.mode.set_rng_state(rng_at[l]);
        let out = model.layer_forward(l, input.as_tensor(), &rope, start, slot(l).as_mut(), ops)?;
        let store = (out * &grad_out)?.sum_all()?.backward()?;
        add_grads(params, &store, acc)?;
        grad_out = match store.get(input.as_tensor()) {
            Some(g) => g.clone(),
            None => grad_out.zeros_like()?,
        };
    }
    let prompt_id = model.prompt.as_ref().map(|p| p.id());
    if params.iter().any(|p| {
        let id = p.var.as_tensor().id();
        id == model.embed_tokens.id() || Some(id) == prompt_id
    }) {
        let store = (model.layer_input(&batch.input, 0)?.0 * &grad_out)?
            .sum_all()?
            .backward()?;
        add_grads(params, &store, acc)?;
    }
    model.mode.set_rng_state(rng_after);
    Ok(value)
}

/// Resident memory of this process, bytes (0 where the platform does not say).
pub fn rss_bytes() -> u64 {
    read_status_kb("VmRSS:") * 1024
}

/// Peak resident memory of this process, bytes.
pub fn peak_rss_bytes() -> u64 {
    read_status_kb("VmHWM:") * 1024
}

fn read_status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Concatenate examples (in order) into rows of exactly `seq_len + 1` tokens; the last,
/// shorter row is kept. Attention crosses example boundaries, as in TRL's packing.
pub fn pack(examples: &[Tokenized], seq_len: usize) -> Vec<Tokenized> {
    let mut out = vec![];
    let mut cur = Tokenized {
        ids: vec![],
        trained: vec![],
    };
    for e in examples {
        for (&id, &tr) in e.ids.iter().zip(&e.trained) {
            cur.ids.push(id);
            cur.trained.push(tr);
            if cur.ids.len() == seq_len + 1 {
                out.push(std::mem::replace(
                    &mut cur,
                    Tokenized {
                        ids: vec![],
                        trained: vec![],
                    },
                ));
            }
        }
    }
    if cur.ids.len() > 1 {
        out.push(cur);
    }
    out
}

fn io<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> TrainError + '_ {
    move |e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Write a folder atomically: fill `<dir>.tmp`, then swap it into place.
fn write_dir_atomically(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    let old = dir.with_extension("old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    if let Err(e) = fill(&tmp) {
        // a full disk or a vanished folder: leave no half-written checkpoint behind
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// The checkpoint folder to resume from: `last`, or `last.old` if a crash hit the swap.
pub fn find_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    let base = run_dir.join("checkpoints");
    ["last", "last.old"]
        .iter()
        .map(|n| base.join(n))
        .find(|p| p.join("state.json").exists())
}

fn weights_file(method: MethodKind) -> &'static str {
    match method {
        m if m.is_lora()
            || m == MethodKind::Ia3
            || m == MethodKind::PromptTuning
            || m == MethodKind::PTuningV2 =>
        {
            "adapter_model.safetensors"
        }
        _ => "trainable.safetensors",
    }
}

/// PEFT's `adapter_config.json` for a LoRA or (IA)3 run; `None` for methods PEFT does not
/// describe (their checkpoints hold HF-named tensors).
pub fn peft_adapter_config(
    cfg: &TrainConfig,
    base_model: &str,
    model: &whetstone_formats::ModelConfig,
) -> Option<serde_json::Value> {
    if cfg.method == MethodKind::PromptTuning {
        return Some(serde_json::json!({
            "peft_type": "PROMPT_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "num_virtual_tokens": cfg.prompt.n_virtual_tokens,
            "token_dim": model.hidden_size,
            "num_transformer_submodules": 1,
            "num_attention_heads": model.num_heads,
            "num_layers": model.num_layers,
            "prompt_tuning_init": "RANDOM",
            "inference_mode": true,
        }));
    }
    if cfg.method.is_prefix() {
        // PEFT's GQA handling: token_dim and num_attention_heads describe the key/value
        // heads. The saved prefixes are the MLP's output, so `inference_mode` loads them as is.
        let kv = model.num_kv_heads * model.head_dim;
        let projection = cfg.method == MethodKind::PrefixTuning;
        return Some(serde_json::json!({
            "peft_type": "PREFIX_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "num_virtual_tokens": cfg.prompt.n_virtual_tokens,
            "token_dim": kv,
            "num_transformer_submodules": 1,
            "num_attention_heads": model.num_kv_heads,
            "num_layers": model.num_layers,
            "encoder_hidden_size": if cfg.prefix.encoder_hidden == 0 { kv } else { cfg.prefix.encoder_hidden },
            "prefix_projection": projection,
            "inference_mode": true,
        }));
    }
    if cfg.method == MethodKind::Ia3 {
        let targets = crate::config::resolve_targets("ia3.targets", &cfg.ia3.targets, model)
            .unwrap_or_default();
        let ff: Vec<&str> = targets
            .iter()
            .copied()
            .filter(|t| matches!(*t, "gate_proj" | "up_proj" | "down_proj" | "gate_up_proj"))
            .collect();
        return Some(serde_json::json!({
            "peft_type": "IA3",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "target_modules": targets,
            "feedforward_modules": ff,
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_ia3_weights": true,
            "modules_to_save": null,
        }));
    }
    if !cfg.method.is_lora() {
        return None;
    }
    let targets = crate::config::resolve_targets("lora.targets", &cfg.lora.targets, model)
        .unwrap_or_default();
    Some(serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": cfg.lora.r,
        "lora_alpha": cfg.lora.alpha,
        "lora_dropout": cfg.lora.dropout,
        "target_modules": targets,
        "use_rslora": cfg.lora.rslora,
        "use_dora": cfg.method == MethodKind::Dora,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
    }))
}

/// Trainable tensors by name (full precision, from [`AdamW::values`]), in the shapes PEFT
/// stores: (IA)3 vectors become `(out, 1)` for attention modules and `(1, in)` for FFN modules.
fn named(values: Vec<(String, Tensor)>) -> candle_core::Result<HashMap<String, Tensor>> {
    values
        .into_iter()
        .map(|(name, t)| {
            let t = if name.ends_with(".ia3_l") {
                let n = t.elem_count();
                if name.contains(".mlp.") {
                    t.reshape((1, n))?
                } else {
                    t.reshape((n, 1))?
                }
            } else {
                t
            };
            Ok((name, t))
        })
        .collect()
}

struct Loop<'a> {
    model: &'a DecoderModel,
    cfg: &'a TrainConfig,
    opt: AdamW,
    train: Vec<Tokenized>,
    eval: Vec<Tokenized>,
    state: CheckpointState,
    perm: (u64, Vec<usize>),
    base_model: String,
}

impl Loop<'_> {
    fn next_rows(&mut self, k: usize) -> Vec<usize> {
        let n = self.train.len() as u64;
        (0..k)
            .map(|_| {
                let epoch = self.state.rows_seen / n;
                if self.perm.0 != epoch || self.perm.1.is_empty() {
                    self.perm = (
                        epoch,
                        permutation(
                            self.train.len(),
                            self.cfg.seed ^ epoch.wrapping_mul(0x51_7CC1),
                        ),
                    );
                }
                let i = self.perm.1[(self.state.rows_seen % n) as usize];
                self.state.rows_seen += 1;
                i
            })
            .collect()
    }

    fn evaluate(&self) -> Result<f64, TrainError> {
        self.model.mode.set_training(false);
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in self.eval.chunks(self.cfg.batch_size) {
            let rows: Vec<&Tokenized> = chunk.iter().collect();
            let batch = make_batch(&rows, &self.model.device)?;
            if batch.n_targets == 0 {
                continue;
            }
            // inference kernels: no gradients are needed, nothing is kept
            let h = self
                .model
                .hidden_states(&batch.input, 0, None, Ops::Fused)?
                .detach();
            sum += nll_sum(self.model, &h, &batch)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            count += batch.n_targets;
        }
        self.model.mode.set_training(true);
        Ok(if count == 0 {
            f64::NAN
        } else {
            sum / count as f64
        })
    }

    fn sample(&self, tokenizer: &ModelTokenizer) -> Result<Option<(String, String)>, TrainError> {
        let Some(first) = self.eval.first().or(self.train.first()) else {
            return Ok(None);
        };
        let cut = match first.trained.iter().position(|&t| t) {
            // a plain document: continue its first few tokens
            Some(0) => (first.ids.len() / 2).clamp(1, 8),
            Some(c) => c,
            None => return Ok(None),
        };
        let prompt = &first.ids[..cut];
        self.model.mode.set_training(false);
        let params = SamplingParams {
            max_tokens: self.cfg.sample_tokens,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
            stop_strings: vec![],
        };
        let g = generate(self.model, tokenizer, prompt, &params, |_| {})?;
        self.model.mode.set_training(true);
        let prompt_text = tokenizer.decode(prompt, false).unwrap_or_default();
        Ok(Some((prompt_text, g.text)))
    }

    fn save(&self, dir: &Path, with_optimizer: bool) -> Result<(), TrainError> {
        write_dir_atomically(dir, |tmp| {
            let f = tmp.join(weights_file(self.cfg.method));
            candle_core::safetensors::save(&named(self.opt.values())?, &f).map_err(io(&f))?;
            if let (MethodKind::PrefixTuning, Some(prefix)) = (self.cfg.method, &self.model.prefix)
            {
                // the inference form PEFT saves: the MLP folded into the prefixes
                let f = tmp.join("adapter_model.safetensors");
                let past = prefix.past(&self.model.mode)?.detach();
                let past = past.to_dtype(ops::wide_dtype(past.dtype()))?;
                let map = HashMap::from([("prompt_embeddings".to_string(), past)]);
                candle_core::safetensors::save(&map, &f).map_err(io(&f))?;
            }
            if with_optimizer {
                let f = tmp.join("optimizer.safetensors");
                candle_core::safetensors::save(&self.opt.state_tensors(), &f).map_err(io(&f))?;
            }
            if let Some(c) = peft_adapter_config(self.cfg, &self.base_model, &self.model.config) {
                let f = tmp.join("adapter_config.json");
                let text = serde_json::to_string_pretty(&c).map_err(io(&f))?;
                std::fs::write(&f, text).map_err(io(&f))?;
            }
            let f = tmp.join("state.json");
            let text = serde_json::to_string_pretty(&self.state).map_err(io(&f))?;
            std::fs::write(&f, text).map_err(io(&f))?;
            Ok(())
        })
    }
}

/// Train `model` (already built, no method applied yet) as `spec` says.
pub fn train(
    model: &mut DecoderModel,
    spec: TrainSpec,
    base_model: &str,
    mut emit: impl FnMut(TrainEvent),
) -> Result<Summary, TrainError> {
    let cfg = spec.config.clone();
    cfg.validate(&model.config).map_err(TrainError::Invalid)?;
    if spec.data.train.is_empty() {
        return Err(TrainError::Invalid("no training examples".into()));
    }
    let params = methods::apply(model, &cfg)?;
    let trainable_params: usize = params.iter().map(|p| p.var.elem_count()).sum();
    let total_params = methods::count_params(model);
    let mut opt = AdamW::new(params, AdamWSettings::default())?;
    if let (true, Some(init)) = (cfg.method.is_lora(), &cfg.lora.init) {
        let wf = Path::new(init).join("adapter_model.safetensors");
        let w = candle_core::safetensors::load(&wf, &model.device).map_err(io(&wf))?;
        opt.load_values(&w).map_err(io(&wf))?;
    }
    let train = if cfg.packing {
        pack(&spec.data.train, cfg.seq_len)
    } else {
        spec.data.train
    };
    let per_step = (cfg.batch_size * cfg.grad_accum) as u64;
    let total_steps = match cfg.max_steps {
        Some(s) => s,
        None => ((cfg.epochs * train.len() as f64) / per_step as f64)
            .ceil()
            .max(1.0) as u64,
    };
    let warmup = (cfg.warmup_ratio * total_steps as f64).ceil() as u64;
    let mut lp = Loop {
        model,
        cfg: &cfg,
        opt,
        eval: spec.data.eval,
        state: CheckpointState {
            step: 0,
            rows_seen: 0,
            dropout_rng: cfg.seed,
            optimizer_step: 0,
            best_eval_loss: None,
            best_step: None,
            first_eval_loss: None,
            last_eval_loss: None,
            evals_without_improvement: 0,
            method: cfg.method,
            total_steps,
            tokens_seen: 0,
        },
        train,
        perm: (u64::MAX, vec![]),
        base_model: base_model.to_string(),
    };
    if let Some(dir) = &spec.resume_from {
        let state_path = dir.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
        let st: CheckpointState = serde_json::from_str(&text).map_err(io(&state_path))?;
        if st.method != cfg.method {
            return Err(TrainError::Checkpoint {
                path: dir.clone(),
                message: format!(
                    "the checkpoint is of method {}, the run of {}",
                    st.method.as_str(),
                    cfg.method.as_str()
                ),
            });
        }
        let wf = dir.join(weights_file(cfg.method));
        let w = candle_core::safetensors::load(&wf, &lp.model.device).map_err(io(&wf))?;
        let w = w
            .into_iter()
            .map(|(k, t)| {
                let t = if k.ends_with(".ia3_l") {
                    t.flatten_all()?
                } else {
                    t
                };
                Ok((k, t))
            })
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        lp.opt.load_values(&w).map_err(io(&wf))?;
        let of = dir.join("optimizer.safetensors");
        let o = candle_core::safetensors::load(&of, &lp.model.device).map_err(io(&of))?;
        lp.opt.load_state(&o, st.optimizer_step).map_err(io(&of))?;
        lp.state = st;
        lp.state.total_steps = total_steps;
    }
    let resumed_from = spec.resume_from.as_ref().map(|_| lp.state.step);
    lp.model.mode.set_rng_state(lp.state.dropout_rng);
    lp.model.mode.set_training(true);
    emit(TrainEvent::Started {
        step: lp.state.step,
        total_steps,
        train_records: lp.train.len(),
        eval_records: lp.eval.len(),
        trainable_params,
        total_params,
        resumed_from,
    });
    let dtype = lp.model.dtype;
    emit(TrainEvent::Log {
        step: lp.state.step,
        level: "info".into(),
        message: format!(
            "computing in {} (dtype={}){}",
            if dtype == DType::F32 { "f32" } else { "bf16" },
            cfg.dtype,
            if optim::is_half(dtype) {
                "; trainable weights and optimizer state in f32"
            } else {
                ""
            }
        ),
    });
    let started = Instant::now();
    let ckpt_dir = spec.run_dir.join("checkpoints");
    let mut summary = Summary {
        total_steps,
        trainable_params,
        total_params,
        ..Default::default()
    };
    let mut tokens_total = 0usize;
    let mut train_time = 0f64;
    let mut last_loss = None;

    let do_eval = |lp: &mut Loop, emit: &mut dyn FnMut(TrainEvent)| -> Result<bool, TrainError> {
        if lp.eval.is_empty() {
            return Ok(false);
        }
        let step = lp.state.step;
        let loss = lp.evaluate()?;
        emit(TrainEvent::Eval {
            step,
            eval_loss: loss,
            perplexity: loss.exp(),
        });
        lp.state.first_eval_loss.get_or_insert(loss);
        lp.state.last_eval_loss = Some(loss);
        let better = lp.state.best_eval_loss.is_none_or(|b| loss < b);
        if better {
            lp.state.best_eval_loss = Some(loss);
            lp.state.best_step = Some(step);
            lp.state.evals_without_improvement = 0;
            if step > 0 {
                let dir = ckpt_dir.join("best");
                lp.save(&dir, false)?;
                emit(TrainEvent::Checkpoint {
                    step,
                    path: dir.display().to_string(),
                    best: true,
                });
            }
        } else {
            lp.state.evals_without_improvement += 1;
        }
        if lp.cfg.sample_tokens > 0 {
            if let Some(tok) = spec.tokenizer {
                if let Some((prompt, text)) = lp.sample(tok)? {
                    emit(TrainEvent::Sample { step, prompt, text });
                }
            }
        }
        Ok(true)
    };
    let save_last = |lp: &mut Loop, emit: &mut dyn FnMut(TrainEvent)| -> Result<(), TrainError> {
        lp.state.dropout_rng = lp.model.mode.rng_state();
        lp.state.optimizer_step = lp.opt.step;
        let dir = ckpt_dir.join("last");
        lp.save(&dir, true)?;
        emit(TrainEvent::Checkpoint {
            step: lp.state.step,
            path: dir.display().to_string(),
            best: false,
        });
        Ok(())
    };

    if resumed_from.is_none() && spec.dump_first_grads.is_none() {
        do_eval(&mut lp, &mut emit)?;
    }
    let mut status = RunStatus::Completed;
    while lp.state.step < total_steps {
        if spec.cancel.load(Ordering::Relaxed) {
            status = RunStatus::Cancelled;
            break;
        }
        let t0 = Instant::now();
        let step = lp.state.step;
        let lr = optim::lr_at(cfg.schedule, cfg.lr(), step, total_steps, warmup);
        let micro: Vec<Vec<usize>> = (0..cfg.grad_accum)
            .map(|_| lp.next_rows(cfg.batch_size))
            .collect();
        let batches = micro
            .iter()
            .map(|idx| {
                let rows: Vec<&Tokenized> = idx.iter().map(|&i| &lp.train[i]).collect();
                make_batch(&rows, &lp.model.device)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let denom: usize = batches.iter().map(|b| b.n_targets).sum();
        let mut acc: Vec<Option<Tensor>> = vec![None; lp.opt.params.len()];
        let mut loss_sum = 0f64;
        if denom > 0 {
            for b in batches.iter().filter(|b| b.n_targets > 0) {
                loss_sum += forward_backward(
                    lp.model,
                    &lp.opt.params,
                    b,
                    denom as f64,
                    cfg.gradient_checkpointing,
                    &mut acc,
                )?;
            }
        }
        let loss = loss_sum / denom.max(1) as f64;
        let mut grads = acc
            .into_iter()
            .zip(&lp.opt.params)
            .map(|(g, p)| g.map_or_else(|| p.var.zeros_like(), Ok))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if let Some(path) = &spec.dump_first_grads {
            let mut out: HashMap<String, Tensor> = lp
                .opt
                .params
                .iter()
                .zip(&grads)
                .map(|(p, g)| (format!("grad.{}", p.name), g.clone()))
                .collect();
            for (i, b) in batches.iter().enumerate() {
                out.insert(format!("batch.{i}.input"), b.input.clone());
                out.insert(format!("batch.{i}.rows"), b.rows.clone());
                out.insert(format!("batch.{i}.targets"), b.targets.clone());
            }
            out.insert(
                "loss".into(),
                Tensor::new(&[loss as f32], &lp.model.device)?,
            );
            candle_core::safetensors::save(&out, path).map_err(io(path))?;
            summary.final_train_loss = Some(loss);
            break;
        }
        let grad_norm = optim::clip(&mut grads, cfg.max_grad_norm)?;
        if !loss.is_finite() || !grad_norm.is_finite() {
            status = RunStatus::Diverged;
            let msg = format!(
                "the loss became {} at step {}: the run stopped before applying that update; lower the learning rate (now {:.2e}) and resume from the last checkpoint",
                if loss.is_finite() { "finite but the gradient norm did not" } else { "non-finite" },
                step + 1,
                lr
            );
            emit(TrainEvent::Log {
                step,
                level: "error".into(),
                message: msg.clone(),
            });
            summary.message = Some(msg);
            break;
        }
        lp.opt.apply(&grads, lr)?;
        lp.state.step += 1;
        let dt = t0.elapsed().as_secs_f64();
        let tokens: usize = batches.iter().map(|b| b.tokens).sum();
        tokens_total += tokens;
        lp.state.tokens_seen += tokens as u64;
        train_time += dt;
        last_loss = Some(loss);
        let n = lp.train.len() as f64;
        emit(TrainEvent::Step {
            step: lp.state.step,
            loss,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / dt.max(1e-9),
            mem_bytes: rss_bytes(),
            epoch: lp.state.rows_seen as f64 / n,
            tokens: lp.state.tokens_seen,
        });
        let s = lp.state.step;
        let last = s == total_steps;
        let mut stop_early = false;
        if (cfg.eval_every > 0 && s.is_multiple_of(cfg.eval_every)) || last {
            do_eval(&mut lp, &mut emit)?;
            if cfg.early_stopping_patience > 0
                && lp.state.evals_without_improvement >= cfg.early_stopping_patience
            {
                stop_early = true;
                summary.stopped_early = true;
                emit(TrainEvent::Log {
                    step: s,
                    level: "info".into(),
                    message: format!(
                        "stopping early: no better eval loss in {} evaluations",
                        cfg.early_stopping_patience
                    ),
                });
            }
        }
        if (cfg.save_every > 0 && s.is_multiple_of(cfg.save_every)) || last || stop_early {
            save_last(&mut lp, &mut emit)?;
        }
        if stop_early {
            break;
        }
    }
    if status == RunStatus::Cancelled && lp.state.step > 0 {
        save_last(&mut lp, &mut emit)?;
    }
    lp.model.mode.set_training(false);
    summary.steps_done = lp.state.step;
    summary.first_eval_loss = lp.state.first_eval_loss;
    summary.last_eval_loss = lp.state.last_eval_loss;
    summary.best_eval_loss = lp.state.best_eval_loss;
    summary.best_step = lp.state.best_step;
    summary.final_train_loss = summary.final_train_loss.or(last_loss);
    summary.tokens_per_s = if train_time > 0.0 {
        tokens_total as f64 / train_time
    } else {
        0.0
    };
    summary.peak_mem_bytes = peak_rss_bytes();
    summary.elapsed_s = started.elapsed().as_secs_f64();
    emit(TrainEvent::Finished {
        step: lp.state.step,
        status,
        summary: summary.clone(),
    });
    Ok(summary)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ops::tests::rand_vec;
    use whetstone_formats::{ModelConfig, Weights};

    /// A random two-layer Llama-layout model (qkv biases on, to exercise them).
    pub fn tiny_model(dtype: DType, seed: u64) -> DecoderModel {
        tiny_model_via(dtype, dtype, seed)
    }

    /// [`tiny_model`] in `dtype` with weights rounded through `via` first (the same
    /// bf16-representable weights in an f32 and a bf16 model).
    pub fn tiny_model_via(dtype: DType, via: DType, seed: u64) -> DecoderModel {
        let cfg = serde_json::json!({
            "model_type": "qwen2", "vocab_size": 40, "hidden_size": 16,
            "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": true, "max_position_embeddings": 64
        });
        let config = ModelConfig::from_hf_value(&cfg, Path::new("tiny/config.json")).unwrap();
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        let mut k = seed;
        let mut put = |name: String, shape: &[usize], scale: f64, offset: f64| {
            k += 1;
            let n: usize = shape.iter().product();
            let v: Vec<f64> = rand_vec(n, k).iter().map(|x| offset + scale * x).collect();
            let t = Tensor::from_vec(v, shape, &dev)
                .unwrap()
                .to_dtype(via)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            tensors.insert(name, t);
        };
        put("model.embed_tokens.weight".into(), &[40, 16], 0.5, 0.0);
        put("model.norm.weight".into(), &[16], 0.2, 1.0);
        for l in 0..2 {
            let p = format!("model.layers.{l}");
            put(format!("{p}.input_layernorm.weight"), &[16], 0.2, 1.0);
            put(
                format!("{p}.post_attention_layernorm.weight"),
                &[16],
                0.2,
                1.0,
            );
            for (n, o, i) in [("q", 16, 16), ("k", 8, 16), ("v", 8, 16), ("o", 16, 16)] {
                put(format!("{p}.self_attn.{n}_proj.weight"), &[o, i], 0.3, 0.0);
                if n != "o" {
                    put(format!("{p}.self_attn.{n}_proj.bias"), &[o], 0.1, 0.0);
                }
            }
            put(format!("{p}.mlp.gate_proj.weight"), &[24, 16], 0.3, 0.0);
            put(format!("{p}.mlp.up_proj.weight"), &[24, 16], 0.3, 0.0);
            put(format!("{p}.mlp.down_proj.weight"), &[16, 24], 0.3, 0.0);
        }
        DecoderModel::new(&config, Weights::from_map("tiny", tensors), dtype, &dev).unwrap()
    }

    /// Sequences where the second half repeats the first: learnable, with a masked prompt.
    fn copy_task(n: usize, seed: u64) -> Vec<Tokenized> {
        (0..n)
            .map(|i| {
                let half: Vec<u32> = rand_vec(5, seed + i as u64)
                    .iter()
                    .map(|x| (((x + 1.0) * 10.0) as u32) % 38 + 2)
                    .collect();
                let mut ids = vec![1];
                ids.extend(&half);
                ids.extend(&half);
                let trained = (0..ids.len()).map(|j| j > half.len()).collect();
                Tokenized { ids, trained }
            })
            .collect()
    }

    fn cfg(method: MethodKind) -> TrainConfig {
        let mut c = TrainConfig::for_method(method);
        c.batch_size = 4;
        c.max_steps = Some(6);
        c.eval_every = 3;
        c.save_every = 3;
        c.sample_tokens = 0;
        c.lr = Some(1e-2);
        c.seq_len = 32;
        c.lora.dropout = 0.1;
        c.adapter.bottleneck = Some(4);
        c.prompt.n_virtual_tokens = 4;
        c
    }

    fn run(
        model: &mut DecoderModel,
        c: &TrainConfig,
        dir: &Path,
        resume: Option<PathBuf>,
        cancel_at: Option<u64>,
    ) -> (Summary, Vec<TrainEvent>) {
        let cancel = Arc::new(AtomicBool::new(false));
        let spec = TrainSpec {
            config: c.clone(),
            data: TrainData {
                train: copy_task(12, 1),
                eval: copy_task(4, 100),
            },
            run_dir: dir.to_path_buf(),
            resume_from: resume,
            cancel: cancel.clone(),
            tokenizer: None,
            dump_first_grads: None,
        };
        let mut events = vec![];
        let s = train(model, spec, "tiny", |e| {
            if let (TrainEvent::Step { step, .. }, Some(at)) = (&e, cancel_at) {
                if *step == at {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            events.push(e);
        })
        .unwrap();
        (s, events)
    }

    fn step_losses(events: &[TrainEvent]) -> Vec<(u64, f64)> {
        events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::Step { step, loss, .. } => Some((*step, *loss)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn method_gradients_match_finite_differences() {
        // DoRA is left out on purpose: like PEFT it detaches the weight norm, so its A and B
        // gradients are not those of the function (tests/python checks them against PEFT's).
        for method in [
            MethodKind::Lora,
            MethodKind::Ia3,
            MethodKind::Bitfit,
            MethodKind::PromptTuning,
            MethodKind::Adapter,
            MethodKind::Qlora,
            MethodKind::PrefixTuning,
            MethodKind::PTuningV2,
        ] {
            method_gradient_check(method);
        }
    }

    fn method_gradient_check(method: MethodKind) {
        let mut model = tiny_model(DType::F64, 3);
        let mut c = cfg(method);
        c.lora.dropout = 0.0;
        c.lora.targets = vec!["q_proj".into(), "v_proj".into(), "down_proj".into()];
        c.prompt.n_virtual_tokens = 3;
        c.adapter.bottleneck = Some(4);
        let params = methods::apply(&mut model, &c).unwrap();
        assert!(!params.is_empty(), "{method:?}");
        // Move every trainable value off its init (LoRA's B = 0 would zero A's gradient,
        // (IA)3's ones would hide a missing scale).
        for (i, p) in params.iter().enumerate() {
            let v: Vec<f64> = rand_vec(p.var.elem_count(), 50 + i as u64);
            p.var
                .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        let data = copy_task(3, 7);
        let rows: Vec<&Tokenized> = data.iter().collect();
        let batch = make_batch(&rows, &Device::Cpu).unwrap();
        let denom = batch.n_targets as f64;
        let mut acc = vec![None; params.len()];
        forward_backward(&model, &params, &batch, denom, false, &mut acc).unwrap();
        let loss = |m: &DecoderModel| -> f64 {
            let h = m
                .hidden_states(&batch.input, 0, None, Ops::Differentiable)
                .unwrap();
            nll_sum(m, &h, &batch).unwrap().to_scalar::<f64>().unwrap() / denom
        };
        let h = 1e-6;
        let mut worst = 0f64;
        for (i, p) in params.iter().enumerate() {
            let g = acc[i]
                .as_ref()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let x0 = p.var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for j in (0..x0.len()).step_by(7) {
                let set = |d: f64| {
                    let mut x = x0.clone();
                    x[j] += d;
                    p.var
                        .set(&Tensor::from_vec(x, p.var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                };
                set(h);
                let up = loss(&model);
                set(-h);
                let down = loss(&model);
                set(0.0);
                let fd = (up - down) / (2.0 * h);
                worst = worst.max((fd - g[j]).abs() / (1.0 + fd.abs()));
            }
        }
        assert!(worst < 1e-6, "{method:?}: worst relative error {worst:e}");
    }

    #[test]
    fn bf16_gradients_agree_with_f32() {
        // The same (bf16-representable) weights and batch in both dtypes. bf16 rounds every
        // intermediate result to u = 2^-8 ≈ 0.39 %; on the path from a parameter to the loss
        // and back there are about S = 60 of them in this 2-layer model (norms, projections,
        // rope, scores, attention output, residuals, MLP, head, and as many in backward).
        // Independent roundings grow like √S·u ≈ 3 %: the bounds are twice that for the mean
        // over a method's tensors and four times for its worst (a small tensor averages over
        // few elements), and 1 % for the loss. They follow from the format, not from one
        // machine (measured, identical on gemm's AVX2 and AVX-512 paths: means 1.0–3.6 %,
        // worst 7.1 %; docs/TESTING.md).
        let rounding_walk = (60f32).sqrt() * (2f32).powi(-8);
        let data = copy_task(4, 7);
        let rows: Vec<&Tokenized> = data.iter().collect();
        let batch = make_batch(&rows, &Device::Cpu).unwrap();
        let denom = batch.n_targets as f64;
        for method in [
            MethodKind::Lora,
            MethodKind::Qlora,
            MethodKind::Dora,
            MethodKind::Full,
            MethodKind::Adapter,
            MethodKind::PrefixTuning,
        ] {
            let mut c = cfg(method);
            c.lora.dropout = 0.0;
            let mut out = vec![];
            for dtype in [DType::F32, DType::BF16] {
                let mut model = tiny_model_via(dtype, DType::BF16, 3);
                let params = methods::apply(&mut model, &c).unwrap();
                for (i, p) in params.iter().enumerate() {
                    let v: Vec<f32> = rand_vec(p.var.elem_count(), 50 + i as u64)
                        .iter()
                        .map(|&x| 0.3 * x as f32)
                        .collect();
                    let t = Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap();
                    let t = t.to_dtype(DType::BF16).unwrap().to_dtype(dtype).unwrap();
                    p.var.set(&t).unwrap();
                }
                model.mode.set_training(true);
                let mut acc = vec![None; params.len()];
                let loss =
                    forward_backward(&model, &params, &batch, denom, false, &mut acc).unwrap();
                let grads: Vec<Tensor> = acc.into_iter().map(|g| g.unwrap()).collect();
                assert!(grads.iter().all(|g| g.dtype() == DType::F32), "{method:?}");
                out.push((loss, grads));
            }
            let ((l32, g32), (l16, g16)) = (&out[0], &out[1]);
            assert!(
                (l32 - l16).abs() < 0.01 * l32,
                "{method:?}: loss {l32} vs {l16}"
            );
            let norm = |t: &Tensor| -> f32 {
                let sq = t.sqr().unwrap().sum_all().unwrap();
                sq.to_scalar::<f32>().unwrap().sqrt()
            };
            let rel: Vec<f32> = g32
                .iter()
                .zip(g16)
                .map(|(a, b)| norm(&(b - a).unwrap()) / norm(a).max(1e-12))
                .collect();
            let mean = rel.iter().sum::<f32>() / rel.len() as f32;
            let worst = rel.iter().copied().fold(0f32, f32::max);
            println!(
                "{method:?}: bf16 loss {:.2e} relative, gradients mean {mean:.4} worst {worst:.4}",
                (l32 - l16).abs() / l32
            );
            assert!(
                mean < 2.0 * rounding_walk && worst < 4.0 * rounding_walk,
                "{method:?}: gradients differ by {mean} on average, {worst} at worst"
            );
        }
    }

    #[test]
    fn checkpointing_gives_the_same_gradients_and_dropout() {
        let c = cfg(MethodKind::Lora);
        let data = copy_task(4, 9);
        let rows: Vec<&Tokenized> = data.iter().collect();
        let mut grads = vec![];
        for checkpointing in [false, true] {
            let mut model = tiny_model(DType::F64, 4);
            let params = methods::apply(&mut model, &c).unwrap();
            for (i, p) in params.iter().enumerate() {
                let v = rand_vec(p.var.elem_count(), 70 + i as u64);
                p.var
                    .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            }
            model.mode.set_training(true);
            model.mode.set_rng_state(11);
            let batch = make_batch(&rows, &Device::Cpu).unwrap();
            let mut acc = vec![None; params.len()];
            let l =
                forward_backward(&model, &params, &batch, 10.0, checkpointing, &mut acc).unwrap();
            grads.push((l, acc, model.mode.rng_state()));
        }
        let (a, b) = (&grads[0], &grads[1]);
        assert!((a.0 - b.0).abs() < 1e-12);
        assert_eq!(a.2, b.2, "the dropout stream must end in the same state");
        for (x, y) in a.1.iter().zip(&b.1) {
            let d = (x.as_ref().unwrap() - y.as_ref().unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(d < 1e-12, "gradient differs by {d:e}");
        }
    }

    #[test]
    fn full_checkpointing_reaches_the_embeddings() {
        let mut c = cfg(MethodKind::Full);
        c.gradient_checkpointing = true;
        let data = copy_task(2, 3);
        let rows: Vec<&Tokenized> = data.iter().collect();
        let mut out = vec![];
        for checkpointing in [false, true] {
            let mut model = tiny_model(DType::F64, 5);
            let params = methods::apply(&mut model, &c).unwrap();
            let batch = make_batch(&rows, &Device::Cpu).unwrap();
            let mut acc = vec![None; params.len()];
            forward_backward(&model, &params, &batch, 5.0, checkpointing, &mut acc).unwrap();
            out.push(
                acc[0]
                    .clone()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap(),
            );
        }
        assert!((out[0] - out[1]).abs() < 1e-10, "{out:?}");
    }

    #[test]
    fn every_method_lowers_the_loss_and_freeze_trains_only_the_last_layers() {
        lowers_the_loss(DType::F32);
    }

    #[test]
    fn every_method_lowers_the_loss_in_bf16() {
        lowers_the_loss(DType::BF16);
    }

    fn lowers_the_loss(dtype: DType) {
        for method in MethodKind::ALL {
            let tmp = tempfile::tempdir().unwrap();
            let mut model = tiny_model(dtype, 6);
            let mut c = cfg(method);
            c.max_steps = Some(15);
            c.freeze.trainable_layers = 1;
            // scaling vectors and biases are few parameters: they need a larger step
            if matches!(
                method,
                MethodKind::Ia3 | MethodKind::Bitfit | MethodKind::PromptTuning
            ) {
                c.lr = Some(1e-1);
            }
            if method == MethodKind::PrefixTuning {
                c.lr = Some(3e-2);
            }
            if method == MethodKind::PTuningV2 {
                c.lr = Some(1e-1);
            }
            let (s, events) = run(&mut model, &c, tmp.path(), None, None);
            let first = s.first_eval_loss.unwrap();
            let best = s.best_eval_loss.unwrap();
            // (IA)3 and BitFit can only rescale / shift: a smaller but clear drop
            let bar = match method {
                MethodKind::Ia3
                | MethodKind::Bitfit
                | MethodKind::PromptTuning
                | MethodKind::PrefixTuning
                | MethodKind::PTuningV2 => 0.97,
                _ => 0.9,
            };
            assert!(
                best < first * bar,
                "{method:?} {dtype:?}: eval {first} -> {best}"
            );
            if method == MethodKind::Freeze {
                // layer 1 (the last) + final norm: 7 linears' weights + biases + 2 norms + norm
                let per_layer = 16 * 16 * 2 + 8 * 16 * 2 + 16 + 8 + 8 + 24 * 16 * 3 + 16 * 2;
                assert_eq!(s.trainable_params, per_layer + 16);
            }
            assert!(matches!(
                events.last(),
                Some(TrainEvent::Finished {
                    status: RunStatus::Completed,
                    ..
                })
            ));
            assert!(tmp.path().join("checkpoints/last/state.json").exists());
            assert!(tmp.path().join("checkpoints/best/state.json").exists());
        }
    }

    #[test]
    fn every_method_resumes_with_identical_losses() {
        for method in MethodKind::ALL {
            resume_check(method, DType::F32);
        }
    }

    #[test]
    fn every_method_resumes_with_identical_losses_in_bf16() {
        // exact only because checkpoints hold the f32 masters, not the bf16 copies
        for method in MethodKind::ALL {
            resume_check(method, DType::BF16);
        }
    }

    fn resume_check(method: MethodKind, dtype: DType) {
        let c = cfg(method);
        let tmp = tempfile::tempdir().unwrap();
        let (_, whole) = run(
            &mut tiny_model(dtype, 8),
            &c,
            &tmp.path().join("a"),
            None,
            None,
        );
        let again = run(
            &mut tiny_model(dtype, 8),
            &c,
            &tmp.path().join("b"),
            None,
            None,
        )
        .1;
        assert_eq!(
            step_losses(&whole),
            step_losses(&again),
            "{method:?} {dtype:?}: same seed, same curve"
        );

        let dir = tmp.path().join("c");
        let (s, first) = run(&mut tiny_model(dtype, 8), &c, &dir, None, Some(2));
        assert_eq!(s.steps_done, 2);
        assert!(matches!(
            first.last(),
            Some(TrainEvent::Finished {
                status: RunStatus::Cancelled,
                ..
            })
        ));
        let ckpt = find_checkpoint(&dir).unwrap();
        let (s, rest) = run(&mut tiny_model(dtype, 8), &c, &dir, Some(ckpt), None);
        assert_eq!(s.steps_done, 6);
        let mut joined = step_losses(&first);
        joined.extend(step_losses(&rest));
        assert_eq!(joined, step_losses(&whole), "{method:?} {dtype:?}");
    }

    #[test]
    fn lora_plus_moves_b_lr_ratio_times_faster() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = cfg(MethodKind::LoraPlus);
        c.max_steps = Some(1);
        c.warmup_ratio = 0.0;
        c.lr = Some(1e-3);
        c.lora_plus.lr_ratio = 16.0;
        c.max_grad_norm = 0.0;
        run(&mut tiny_model(DType::F32, 12), &c, tmp.path(), None, None);
        let w = candle_core::safetensors::load(
            tmp.path()
                .join("checkpoints/last/adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let max_abs = |k: &str| -> f32 {
            w[k].abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        // Adam's first step moves every parameter with a gradient by ±lr: B by 16 × 1e-3
        let b = max_abs("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
        assert!((b - 16e-3).abs() < 1e-4, "{b}");
        assert!(tmp
            .path()
            .join("checkpoints/last/adapter_config.json")
            .exists());
    }

    #[test]
    fn a_non_finite_loss_stops_the_run_before_the_update() {
        let tmp = tempfile::tempdir().unwrap();
        let mut model = tiny_model(DType::F32, 9);
        let nan = (model.norm.ones_like().unwrap() * f64::NAN).unwrap();
        model.norm = nan;
        let (s, events) = run(&mut model, &cfg(MethodKind::Lora), tmp.path(), None, None);
        assert_eq!(s.steps_done, 0);
        assert!(
            s.message
                .as_deref()
                .unwrap_or("")
                .contains("non-finite at step 1"),
            "{:?}",
            s.message
        );
        assert!(matches!(
            events.last(),
            Some(TrainEvent::Finished {
                status: RunStatus::Diverged,
                ..
            })
        ));
        assert!(
            find_checkpoint(tmp.path()).is_none(),
            "nothing after the last good state is saved"
        );
    }

    #[test]
    fn packing_fills_rows_to_seq_len() {
        let rows = pack(&copy_task(10, 2), 16);
        assert!(rows[..rows.len() - 1].iter().all(|r| r.ids.len() == 17));
        let total: usize = rows.iter().map(|r| r.ids.len()).sum();
        assert_eq!(total, 10 * 11);
    }
}
