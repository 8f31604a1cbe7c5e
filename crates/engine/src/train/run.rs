//! The loop itself: set a run up (method applied, optimizer, data order, resume), then
//! step, evaluate, sample and save until the last step, a cancel, divergence or early stop.

use super::batch::pack;
use super::checkpoint::{self, io, CheckpointState};
use super::events::{RunStatus, Summary, TrainError, TrainEvent, TrainSpec};
use super::objective::{self, add_metrics, mean_metrics, Metrics, Objective};
use super::policy::{Checkpointing, EarlyStopping};
use super::step::{step_gradients, StepOutput};
use crate::config::TrainConfig;
use crate::device::{peak_rss_bytes, rss_bytes};
use crate::generate::{generate, SamplingParams};
use crate::methods;
use crate::model::DecoderModel;
use crate::ops::Ops;
use crate::optim::{self, AdamW, AdamWSettings};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;
use whetstone_data::dataset::permutation;
use whetstone_data::Tokenized;
use whetstone_formats::ModelTokenizer;

struct Loop<'a> {
    model: &'a DecoderModel,
    cfg: &'a TrainConfig,
    objective: Box<dyn Objective>,
    opt: AdamW,
    train: Vec<Tokenized>,
    eval: Vec<Tokenized>,
    state: CheckpointState,
    perm: (u64, Vec<usize>),
    base_model: String,
    total_steps: u64,
    trainable_params: usize,
    total_params: usize,
    /// What the run's setup has to say before the first step.
    notes: Vec<String>,
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

    /// The mean eval loss and the mean of each of the objective's metrics.
    fn evaluate(&self) -> Result<(f64, Metrics), TrainError> {
        self.model.mode.set_training(false);
        let out = eval_rows(
            self.model,
            &self.opt.params,
            self.objective.as_ref(),
            &self.eval,
            self.cfg.batch_size,
        );
        self.model.mode.set_training(true);
        out
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
        self.model.mode.set_inference(true);
        let params = SamplingParams::greedy(self.cfg.sample_tokens);
        let g = generate(self.model, tokenizer, prompt, &params, |_| {})?;
        self.model.mode.set_inference(false);
        self.model.mode.set_training(true);
        let prompt_text = tokenizer.decode(prompt, false).unwrap_or_default();
        Ok(Some((prompt_text, g.text)))
    }

    fn save(&self, dir: &Path, with_optimizer: bool) -> Result<(), TrainError> {
        checkpoint::save(
            dir,
            self.model,
            self.cfg,
            &self.opt,
            &self.state,
            &self.base_model,
            with_optimizer,
        )
    }

    /// The micro-batches of the next optimizer step, in data order.
    fn next_batches(&mut self) -> candle_core::Result<Vec<super::Batch>> {
        let micro: Vec<Vec<usize>> = (0..self.cfg.grad_accum)
            .map(|_| self.next_rows(self.cfg.batch_size))
            .collect();
        micro
            .iter()
            .map(|idx| {
                let rows: Vec<&Tokenized> = idx.iter().map(|&i| &self.train[i]).collect();
                self.objective.batch(&rows, &self.model.device)
            })
            .collect()
    }
}

/// Everything before the first step: the method applied, the optimizer (with a LoRA init
/// or a checkpoint's values and moments), the data packed or not, the step count.
fn prepare<'a>(
    model: &'a mut DecoderModel,
    cfg: &'a TrainConfig,
    spec: &mut TrainSpec,
    base_model: &str,
    emit: &mut dyn FnMut(TrainEvent),
) -> Result<Loop<'a>, TrainError> {
    cfg.validate(&model.config).map_err(TrainError::Invalid)?;
    if spec.data.train.is_empty() {
        return Err(TrainError::Invalid("no training examples".into()));
    }
    let mut notes = vec![];
    let shape = |rows| {
        super::preference::shape_rows(cfg.objective, rows, cfg.batch_size)
            .map_err(TrainError::Invalid)
    };
    let (mut data, note) = shape(std::mem::take(&mut spec.data.train))?;
    let (mut eval, _) = shape(std::mem::take(&mut spec.data.eval))?;
    notes.extend(note);
    // The reference is the model before training. With a new adapter that is the base with
    // the adapter off: computed before the method is applied (over the NF4 base for QLoRA).
    // An adapter training on from `init` is its own reference, as TRL keeps a copy of it.
    let init = cfg.method.spec().init_dir(&cfg.methods);
    if cfg.objective.needs_reference() && init.is_none() {
        if cfg.method.spec().facts().quantizes_base {
            methods::quantize_linears(model)?;
        }
        notes.push(references(model, cfg, spec, &mut data, &mut eval, emit)?);
    }
    let params = methods::apply(model, &cfg.method_args())?;
    let trainable_params: usize = params.iter().map(|p| p.var.elem_count()).sum();
    let total_params = methods::count_params(model);
    let mut opt = AdamW::new(params, AdamWSettings::default())?;
    if let Some(init) = init {
        let wf = Path::new(init).join("adapter_model.safetensors");
        let w = candle_core::safetensors::load(&wf, &model.device).map_err(io(&wf))?;
        opt.load_values(&w).map_err(io(&wf))?;
        if cfg.objective.needs_reference() {
            notes.push(references(model, cfg, spec, &mut data, &mut eval, emit)?);
        }
    }
    let train = if cfg.packing {
        pack(&data, cfg.seq_len)
    } else {
        data
    };
    let per_step = (cfg.batch_size * cfg.grad_accum) as u64;
    let total_steps = match cfg.max_steps {
        Some(s) => s,
        None => ((cfg.epochs * train.len() as f64) / per_step as f64)
            .ceil()
            .max(1.0) as u64,
    };
    let mut state = CheckpointState {
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
    };
    if let Some(dir) = &spec.resume_from {
        state = checkpoint::load(dir, cfg.method, &mut opt, &model.device)?;
        state.total_steps = total_steps;
    }
    Ok(Loop {
        model,
        cfg,
        objective: objective::for_config(cfg),
        opt,
        eval,
        state,
        train,
        perm: (u64::MAX, vec![]),
        base_model: base_model.to_string(),
        total_steps,
        trainable_params,
        total_params,
        notes,
    })
}

/// The reference log-probabilities of every row (see [`super::preference`]): computed from
/// the model as loaded and kept in `<run_dir>/reference_logps.json` (each f64 as its bits,
/// `{"train": [[chosen, pair], ...], "eval": [...]}`), which a resumed run reads back
/// instead, so it compares against the very same numbers.
fn references(
    model: &DecoderModel,
    cfg: &TrainConfig,
    spec: &TrainSpec,
    train: &mut [Tokenized],
    eval: &mut [Tokenized],
    emit: &mut dyn FnMut(TrainEvent),
) -> Result<String, TrainError> {
    let path = spec.run_dir.join("reference_logps.json");
    if spec.resume_from.is_some() && path.exists() {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        // the values as their bits: a decimal JSON number may not parse back to the same f64
        let saved: HashMap<String, Vec<[u64; 2]>> =
            serde_json::from_str(&text).map_err(io(&path))?;
        for (name, rows) in [("train", &mut *train), ("eval", &mut *eval)] {
            let got = saved.get(name).map_or(&[][..], |v| v.as_slice());
            if got.len() != rows.len() {
                return Err(TrainError::Checkpoint {
                    path: path.clone(),
                    message: format!(
                        "holds {} {name} rows, the data has {}: the dataset changed since the run started",
                        got.len(),
                        rows.len()
                    ),
                });
            }
            for (r, v) in rows.iter_mut().zip(got) {
                r.reference = v.iter().map(|&b| f64::from_bits(b)).collect();
            }
        }
        return Ok(format!(
            "reference log-probabilities read back from {}",
            path.display()
        ));
    }
    let started = Instant::now();
    // a progress line every 10 % of the rows, or every 5 s (the pass runs at evaluation speed)
    let total = train.len() + eval.len();
    let (mut before, mut shown, mut last) = (0, 0, Instant::now());
    for rows in [&mut *train, &mut *eval] {
        super::preference::compute_references(model, rows, cfg.batch_size, |done, _| {
            let done = before + done;
            if done < total && (done - shown >= total.div_ceil(10) || last.elapsed().as_secs() >= 5)
            {
                (shown, last) = (done, Instant::now());
                emit(TrainEvent::Log {
                    step: 0,
                    level: "info".into(),
                    message: format!("reference log-probabilities: {done} of {total} rows"),
                });
            }
        })?;
        before += rows.len();
    }
    let pairs = |rows: &[Tokenized]| {
        rows.iter()
            .map(|r| [r.reference[0].to_bits(), r.reference[1].to_bits()])
            .collect::<Vec<_>>()
    };
    let doc = serde_json::json!({"train": pairs(train), "eval": pairs(eval)});
    let tmp = path.with_extension("json.tmp");
    std::fs::create_dir_all(&spec.run_dir).map_err(io(&spec.run_dir))?;
    std::fs::write(&tmp, doc.to_string()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(format!(
        "reference log-probabilities of {} rows computed in {:.1} s (the model before training)",
        train.len() + eval.len(),
        started.elapsed().as_secs_f64(),
    ))
}

/// The gradients of the first optimizer step and the batches they came from, written to
/// `path` (safetensors: `grad.<param>`, `batch.<i>.{input,rows,targets}`, `loss`), for
/// comparing them with another implementation's on the very same data. Nothing is trained.
fn dump_first_step(lp: &mut Loop, path: &Path) -> Result<Summary, TrainError> {
    let batches = lp.next_batches()?;
    let StepOutput { loss, grads, .. } = step_gradients(
        lp.model,
        &lp.opt.params,
        lp.objective.as_ref(),
        &batches,
        lp.cfg.gradient_checkpointing,
    )?;
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
        if let Some(p) = &b.pref {
            if !p.reference.is_empty() {
                out.insert(
                    format!("batch.{i}.reference"),
                    Tensor::new(p.reference.as_slice(), &lp.model.device)?,
                );
            }
            let d: Vec<u8> = p.desirable.iter().map(|&d| d as u8).collect();
            out.insert(
                format!("batch.{i}.desirable"),
                Tensor::new(d.as_slice(), &lp.model.device)?,
            );
        }
    }
    out.insert(
        "loss".into(),
        Tensor::new(&[loss as f32], &lp.model.device)?,
    );
    candle_core::safetensors::save(&out, path).map_err(io(path))?;
    lp.model.mode.set_training(false);
    Ok(Summary {
        total_steps: lp.total_steps,
        trainable_params: lp.trainable_params,
        total_params: lp.total_params,
        final_train_loss: Some(loss),
        ..Default::default()
    })
}

/// Train `model` (already built, no method applied yet) as `spec` says.
pub fn train(
    model: &mut DecoderModel,
    mut spec: TrainSpec,
    base_model: &str,
    mut emit: impl FnMut(TrainEvent),
) -> Result<Summary, TrainError> {
    let cfg = spec.config.clone();
    let mut lp = prepare(model, &cfg, &mut spec, base_model, &mut emit)?;
    let (total_steps, trainable_params, total_params) =
        (lp.total_steps, lp.trainable_params, lp.total_params);
    let warmup = (cfg.warmup_ratio * total_steps as f64).ceil() as u64;
    let checkpointing = Checkpointing::from_config(&cfg);
    let early_stopping = EarlyStopping::from_config(&cfg);
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
    for message in std::mem::take(&mut lp.notes) {
        emit(TrainEvent::Log {
            step: lp.state.step,
            level: "info".into(),
            message,
        });
    }
    let dtype = lp.model.dtype;
    emit(TrainEvent::Log {
        step: lp.state.step,
        level: "info".into(),
        message: format!(
            "computing in {} (dtype={}){}",
            if dtype == DType::F32 { "f32" } else { "bf16" },
            cfg.dtype,
            if crate::dtype::is_half(dtype) {
                "; trainable weights and optimizer state in f32"
            } else {
                ""
            }
        ),
    });
    emit(TrainEvent::Log {
        step: lp.state.step,
        level: "info".into(),
        message: match super::explicit::unsupported(lp.model, &lp.opt.params, lp.objective.as_ref())
        {
            None => "training path: explicit (fused CPU kernels)".into(),
            Some(why) => format!("training path: autograd ({why})"),
        },
    });
    // the explicit path's pooled buffers go back when the run ends, however it ends
    let _pool = crate::kernels::pool::ClearOnDrop;
    let started = Instant::now();
    if let Some(path) = &spec.dump_first_grads {
        let mut summary = dump_first_step(&mut lp, path)?;
        summary.peak_mem_bytes = peak_rss_bytes();
        summary.elapsed_s = started.elapsed().as_secs_f64();
        emit(TrainEvent::Finished {
            step: lp.state.step,
            status: RunStatus::Completed,
            summary: summary.clone(),
        });
        return Ok(summary);
    }
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
        let (loss, metrics) = lp.evaluate()?;
        emit(TrainEvent::Eval {
            step,
            eval_loss: loss,
            perplexity: loss.exp(),
            metrics,
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

    if resumed_from.is_none() {
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
        let batches = lp.next_batches()?;
        let StepOutput {
            loss,
            metrics,
            mut grads,
        } = step_gradients(
            lp.model,
            &lp.opt.params,
            lp.objective.as_ref(),
            &batches,
            cfg.gradient_checkpointing,
        )?;
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
            metrics,
        });
        let s = lp.state.step;
        let last = s == total_steps;
        let mut stop_early = false;
        if checkpointing.eval_due(s, last) {
            do_eval(&mut lp, &mut emit)?;
            if early_stopping.should_stop(lp.state.evals_without_improvement) {
                stop_early = true;
                summary.stopped_early = true;
                emit(TrainEvent::Log {
                    step: s,
                    level: "info".into(),
                    message: format!(
                        "stopping early: no better eval loss in {} evaluations",
                        early_stopping.patience
                    ),
                });
            }
        }
        if checkpointing.save_due(s, last, stop_early) {
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

/// The mean loss of `objective` over `rows` (in batches of `batch_size`) and the mean of its
/// metrics, forward only: the explicit path's kernels where they apply, else candle's
/// inference kernels. `params` are the run's trainable tensors (none for a model loaded for
/// inference).
fn eval_rows(
    model: &DecoderModel,
    params: &[crate::params::Param],
    objective: &dyn Objective,
    rows: &[Tokenized],
    batch_size: usize,
) -> Result<(f64, Metrics), TrainError> {
    model.mode.set_inference(true);
    let out = (|| {
        let (mut sum, mut count) = (0f64, 0usize);
        let mut metrics = Metrics::new();
        let explicit = super::explicit::unsupported(model, params, objective).is_none();
        for chunk in rows.chunks(batch_size.max(1)) {
            let rows: Vec<&Tokenized> = chunk.iter().collect();
            let batch = objective.batch(&rows, &model.device)?;
            let terms = objective.terms(&batch);
            if terms == 0 {
                continue;
            }
            let (loss, m) = if explicit {
                super::explicit::evaluate(model, objective, &batch)?
            } else {
                let h = model
                    .hidden_states(&batch.input, 0, None, Ops::Fused)?
                    .detach();
                let out = objective.loss_sum(model, &h, &batch)?;
                (
                    out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
                    out.metrics,
                )
            };
            sum += loss;
            add_metrics(&mut metrics, &m);
            count += terms;
        }
        let loss = if count == 0 {
            f64::NAN
        } else {
            sum / count as f64
        };
        Ok((loss, mean_metrics(metrics, count)))
    })();
    model.mode.set_inference(false);
    out
}

/// The eval loss a run of `cfg` would report for `model` (an adapter applied for inference)
/// on the held-out rows `eval`: the same objective, batches and kernels as the training
/// loop's evaluations. Objectives that compare against the model before training (DPO,
/// KTO) need the reference pass of a run and are refused.
pub fn eval_loss(
    model: &DecoderModel,
    cfg: &TrainConfig,
    eval: &[Tokenized],
) -> Result<f64, TrainError> {
    if cfg.objective.needs_reference() {
        return Err(TrainError::Invalid(format!(
            "objective `{}` measures against the model before training; only a run can evaluate it",
            cfg.objective.as_str()
        )));
    }
    model.mode.set_training(false);
    let objective = objective::for_config(cfg);
    Ok(eval_rows(model, &[], objective.as_ref(), eval, cfg.batch_size)?.0)
}
