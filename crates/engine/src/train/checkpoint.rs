//! Checkpoints: what a run saves so that resuming continues with the very same losses
//! (trainable values, optimizer moments, dropout stream, data cursor), written atomically,
//! in PEFT's layout where PEFT describes the method.

use super::events::TrainError;
use crate::config::{MethodKind, TrainConfig};
use crate::model::DecoderModel;
use crate::optim::AdamW;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

pub(super) fn io<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> TrainError + '_ {
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
    method.spec().facts().checkpoint_file
}

/// PEFT's `adapter_config.json` for a run; `None` for methods PEFT does not describe
/// (their checkpoints hold HF-named tensors).
pub fn peft_adapter_config(
    cfg: &TrainConfig,
    base_model: &str,
    model: &whetstone_formats::ModelConfig,
) -> Option<serde_json::Value> {
    cfg.method
        .spec()
        .peft_config(&cfg.methods, base_model, model)
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

/// Save the run's state into `dir` (atomically): the trainable tensors, PEFT's config
/// where it applies, `state.json`, and with `with_optimizer` the optimizer moments.
pub(super) fn save(
    dir: &Path,
    model: &DecoderModel,
    cfg: &TrainConfig,
    opt: &AdamW,
    state: &CheckpointState,
    base_model: &str,
    with_optimizer: bool,
) -> Result<(), TrainError> {
    write_dir_atomically(dir, |tmp| {
        let f = tmp.join(weights_file(cfg.method));
        candle_core::safetensors::save(&named(opt.values())?, &f).map_err(io(&f))?;
        if let Some(map) = cfg.method.spec().inference_tensors(model)? {
            let f = tmp.join("adapter_model.safetensors");
            candle_core::safetensors::save(&map, &f).map_err(io(&f))?;
        }
        if with_optimizer {
            let f = tmp.join("optimizer.safetensors");
            candle_core::safetensors::save(&opt.state_tensors(), &f).map_err(io(&f))?;
        }
        if let Some(c) = peft_adapter_config(cfg, base_model, &model.config) {
            let f = tmp.join("adapter_config.json");
            let text = serde_json::to_string_pretty(&c).map_err(io(&f))?;
            std::fs::write(&f, text).map_err(io(&f))?;
        }
        let f = tmp.join("state.json");
        let text = serde_json::to_string_pretty(state).map_err(io(&f))?;
        std::fs::write(&f, text).map_err(io(&f))?;
        Ok(())
    })
}

/// Load checkpoint `dir` of a `method` run into `opt` (values and moments) and return its
/// state.
pub(super) fn load(
    dir: &Path,
    method: MethodKind,
    opt: &mut AdamW,
    device: &Device,
) -> Result<CheckpointState, TrainError> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let st: CheckpointState = serde_json::from_str(&text).map_err(io(&state_path))?;
    if st.method != method {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            message: format!(
                "the checkpoint is of method {}, the run of {}",
                st.method.as_str(),
                method.as_str()
            ),
        });
    }
    let wf = dir.join(weights_file(method));
    let w = candle_core::safetensors::load(&wf, device).map_err(io(&wf))?;
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
    opt.load_values(&w).map_err(io(&wf))?;
    let of = dir.join("optimizer.safetensors");
    let o = candle_core::safetensors::load(&of, device).map_err(io(&of))?;
    opt.load_state(&o, st.optimizer_step).map_err(io(&of))?;
    Ok(st)
}
