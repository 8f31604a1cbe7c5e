//! Exports: a run's checkpoint as a folder another tool loads.
//!
//! - `peft`: `adapter_config.json` + `adapter_model.safetensors` as Hugging Face PEFT writes
//!   them (LoRA incl. rsLoRA / LoRA+ / QLoRA, DoRA, (IA)3, prompt tuning, prefix tuning,
//!   P-Tuning v2), plus a model card.
//! - `merged`: an HF model folder (config, tokenizer files, safetensors, generation config)
//!   with the adapter folded into the weights (`whetstone_engine::merge`).
//! - `gguf`: a LoRA adapter llama.cpp loads (LoRA-family runs), or for the methods it cannot
//!   describe a whole merged model in f16 / q8_0 / f32 (from a GGUF base: its metadata and
//!   tokenizer copied; from an HF folder: written from the config and a byte-level BPE
//!   `tokenizer.json`).
//! - `ollama`: a `Modelfile` with `FROM` the base, `ADAPTER` the GGUF adapter (or `FROM` a
//!   merged model), the chat template in Ollama's syntax and the stop words.
//!
//! Every export is filled in a hidden staging folder next to its destination and renamed into
//! place when complete, with a `manifest.json` (run, base model and its hash, method, config,
//! every file's size and sha256, app version). A killed export leaves only the staging folder,
//! which the next export in that folder removes.

use crate::paths::DataDir;
use crate::runs::{self, pid_alive, RunError, RunRecord};
use crate::store::Store;
use crate::APP_VERSION;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use whetstone_engine::{merge, MethodKind, TrainConfig};
use whetstone_formats::gguf_out::{self, GgufValue};
use whetstone_formats::weights::save_safetensors;
use whetstone_formats::{sha256_file, ModelSource, SourceKind};

mod to_gguf;
mod to_merged;
mod to_ollama;
mod to_peft;

use to_gguf::*;
use to_merged::*;
pub use to_ollama::modelfile;
use to_peft::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum ExportFormat {
    Peft,
    Merged,
    Gguf,
    Ollama,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] = [Self::Peft, Self::Merged, Self::Gguf, Self::Ollama];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Peft => "peft",
            Self::Merged => "merged",
            Self::Gguf => "gguf",
            Self::Ollama => "ollama",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("--format: `{s}` is not one of peft, merged, gguf, ollama"))
    }
}

pub struct ExportRequest {
    /// A run id.
    pub run: String,
    pub format: ExportFormat,
    /// Destination folder; default `<data dir>/exports/<run>-<format>`.
    pub out: Option<PathBuf>,
    /// `best` or `last`; default the best checkpoint, else the last.
    pub checkpoint: Option<String>,
    /// Storage type: merged `f32|f16|bf16`, GGUF `f32|f16|q8_0`.
    pub dtype: Option<String>,
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct ExportedFile {
    pub name: String,
    #[ts(type = "number")]
    pub bytes: u64,
    pub sha256: String,
}

/// What an export wrote; also the `--json` output of `whetstone export`.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct ExportReport {
    pub run_id: String,
    pub format: ExportFormat,
    /// What the folder holds: `peft_adapter`, `merged_model`, `gguf_adapter`, `gguf_model`,
    /// `ollama_adapter`, `ollama_model`.
    pub kind: String,
    pub path: String,
    pub checkpoint: String,
    pub files: Vec<ExportedFile>,
    pub seconds: f64,
    /// A command that uses the export (`ollama create ...`), when there is one.
    pub next_step: Option<String>,
}

fn user(m: impl Into<String>) -> RunError {
    RunError::User(m.into())
}

fn internal(e: impl std::fmt::Display) -> RunError {
    RunError::Internal(e.to_string())
}

/// llama.cpp can load this method's checkpoint as a LoRA adapter.
fn has_gguf_adapter_form(m: MethodKind) -> bool {
    m.spec().facts().exports.gguf_adapter
}

/// Check that `format` can express a run of `method`, before anything is loaded.
pub fn check_format(method: MethodKind, format: ExportFormat) -> Result<(), String> {
    let name = method.as_str();
    let exports = method.spec().facts().exports;
    match (format, exports.merge) {
        (ExportFormat::Peft, _) if !exports.peft => {
            let peft: Vec<&str> = MethodKind::ALL
                .iter()
                .filter(|m| m.spec().facts().exports.peft)
                .map(|m| m.spec().facts().description.name)
                .collect();
            let instead = match exports.merge {
                Ok(()) => "export it with --format merged",
                Err(_) => "use the checkpoint folder with whetstone's --adapter",
            };
            Err(format!(
                "a `{name}` run has no PEFT adapter form (the methods PEFT describes: {}); {instead}",
                peft.join(", ")
            ))
        }
        (ExportFormat::Merged | ExportFormat::Gguf | ExportFormat::Ollama, Err(why))
            if !exports.gguf_adapter =>
        {
            Err(format!(
                "a `{name}` run cannot be {}: {why}; export it with --format peft{}",
                if format == ExportFormat::Merged {
                    "merged into the base"
                } else {
                    "expressed in GGUF"
                },
                if exports.peft {
                    ""
                } else {
                    " — which does not describe them either; use the checkpoint folder with whetstone's --adapter"
                }
            ))
        }
        _ => Ok(()),
    }
}

/// The checkpoint folder to export.
fn checkpoint_dir(run: &RunRecord, which: Option<&str>) -> Result<(String, PathBuf), RunError> {
    let base = Path::new(&run.run_dir).join("checkpoints");
    let names: &[&str] = match which {
        None => &["best", "last"],
        Some("best") => &["best"],
        Some("last") => &["last"],
        Some(other) => {
            return Err(user(format!(
                "--checkpoint: `{other}` is not `best` or `last`"
            )))
        }
    };
    names
        .iter()
        .map(|n| (n.to_string(), base.join(n)))
        .find(|(_, d)| d.join("state.json").exists())
        .ok_or_else(|| {
            user(format!(
                "run {} has no {} checkpoint to export",
                run.id,
                which.unwrap_or("saved")
            ))
        })
}

/// Where staging folders for `dest` are named: `.<name>.partial-<pid>` beside it.
fn staging_prefix(dest: &Path) -> String {
    format!(
        ".{}.partial-",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into())
    )
}

/// Remove staging folders in `parent` left by exports whose process is gone.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".partial-"))
            .and_then(|(_, pid)| pid.trim_start_matches("old-").parse::<i64>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i64 && !pid_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Fill a staging folder with `fill`, write the manifest, then move it to `dest` (replacing
/// an earlier export there). On failure the staging folder is removed.
fn write_export(
    dest: &Path,
    manifest: Value,
    fill: impl FnOnce(&Path) -> Result<(), RunError>,
) -> Result<Vec<ExportedFile>, RunError> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dest.exists() && !replaceable(dest) {
        return Err(user(format!(
            "{}: exists and is not an earlier Whetstone export (no manifest.json of ours); choose another --out",
            dest.display()
        )));
    }
    std::fs::create_dir_all(parent)
        .map_err(|e| user(format!("{}: cannot create: {e}", parent.display())))?;
    sweep_stale(parent);
    let stage = parent.join(format!("{}{}", staging_prefix(dest), std::process::id()));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(internal)?;
    }
    std::fs::create_dir(&stage)
        .map_err(|e| user(format!("{}: cannot write here: {e}", parent.display())))?;
    let result = (|| {
        fill(&stage)?;
        let files = list_files(&stage)?;
        let mut manifest = manifest;
        manifest["files"] = serde_json::to_value(&files).map_err(internal)?;
        let f = stage.join("manifest.json");
        std::fs::write(
            &f,
            serde_json::to_string_pretty(&manifest).map_err(internal)?,
        )
        .map_err(|e| user(format!("{}: {e}", f.display())))?;
        if dest.exists() {
            let old = parent.join(format!(
                "{}old-{}",
                staging_prefix(dest),
                std::process::id()
            ));
            std::fs::rename(dest, &old)
                .map_err(|e| user(format!("{}: cannot replace: {e}", dest.display())))?;
            if let Err(e) = std::fs::rename(&stage, dest) {
                // put the earlier export back rather than lose both
                let _ = std::fs::rename(&old, dest);
                return Err(user(format!("{}: {e}", dest.display())));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&stage, dest).map_err(|e| user(format!("{}: {e}", dest.display())))?;
        }
        Ok(files)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result
}

/// An export may replace an empty folder or an earlier export (its manifest says so), never
/// anything else a user pointed `--out` at.
fn replaceable(dest: &Path) -> bool {
    if !dest.is_dir() {
        return false;
    }
    if std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none()) {
        return true;
    }
    std::fs::read_to_string(dest.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|m| m.get("whetstone_version").is_some() && m.get("run_id").is_some())
}

/// Every file in `dir` (recursively) with its size and sha256, sorted by name.
fn list_files(dir: &Path) -> Result<Vec<ExportedFile>, RunError> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(internal)? {
            let p = e.map_err(internal)?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p
                .strip_prefix(dir)
                .map_err(internal)?
                .to_string_lossy()
                .replace('\\', "/");
            out.push(ExportedFile {
                name,
                bytes: p.metadata().map_err(internal)?.len(),
                sha256: sha256_file(&p).map_err(internal)?,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn copy(from: &Path, to: &Path) -> Result<(), RunError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| user(format!("{} → {}: {e}", from.display(), to.display())))
}

fn write_json(path: &Path, v: &Value) -> Result<(), RunError> {
    std::fs::write(path, serde_json::to_string_pretty(v).map_err(internal)?)
        .map_err(|e| user(format!("{}: {e}", path.display())))
}

/// The base model's identity for the manifest: its path and a content hash (the GGUF file's
/// sha256, or for a folder the sha256 of its weight files' sha256s in name order).
fn base_identity(path: &Path, kind: SourceKind) -> Result<Value, RunError> {
    let sha = match kind {
        SourceKind::Gguf => sha256_file(path).map_err(internal)?,
        SourceKind::HfFolder => {
            use std::fmt::Write;
            let mut files =
                whetstone_formats::weights::safetensors_files(path).map_err(internal)?;
            files.sort();
            let mut all = String::new();
            for f in &files {
                let _ = writeln!(
                    all,
                    "{}  {}",
                    sha256_file(f).map_err(internal)?,
                    f.file_name().unwrap_or_default().to_string_lossy()
                );
            }
            whetstone_formats::hash::sha256_bytes(all.as_bytes())
        }
    };
    Ok(json!({"path": path.display().to_string(), "kind": kind.as_str(), "sha256": sha}))
}

struct Job {
    run: RunRecord,
    cfg: TrainConfig,
    checkpoint: PathBuf,
    dtype: Option<String>,
    dataset: Value,
    /// What PEFT's `base_model_name_or_path` says: the hub id of a hub model, else the path
    /// the base was loaded from.
    base_reference: String,
}

/// One stage of an export as the window hears it.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct ExportUpdate {
    pub run_id: String,
    pub format: ExportFormat,
    pub stage: String,
}

/// Export a run's checkpoint. `progress` hears one line per stage.
pub async fn export(
    store: &Store,
    dir: &DataDir,
    req: ExportRequest,
    progress: impl Fn(&str) + Send + 'static,
) -> Result<ExportReport, RunError> {
    let started = Instant::now();
    let run = runs::get(store, &req.run)
        .await?
        .ok_or_else(|| user(format!("no run `{}` (see `whetstone runs list`)", req.run)))?;
    let cfg = run.config()?;
    check_format(cfg.method, req.format).map_err(user)?;
    check_dtype(req.format, req.dtype.as_deref())?;
    let (which, checkpoint) = checkpoint_dir(&run, req.checkpoint.as_deref())?;
    let dataset = match crate::datasets::get(store, &run.dataset_id).await? {
        Some(d) => {
            json!({"id": d.id, "name": d.name, "format": d.format, "records": d.records, "sha256": d.sha256})
        }
        None => json!({"id": run.dataset_id}),
    };
    let base_reference = match &run.model_id {
        Some(id) => match crate::models::get(store, id)
            .await
            .map_err(RunError::from)?
        {
            Some(m) if m.source == "hub" => m.reference.trim_start_matches("hf:").to_string(),
            _ => run.model_path.clone(),
        },
        None => run.model_path.clone(),
    };
    let dest = req.out.clone().unwrap_or_else(|| {
        dir.exports()
            .join(format!("{}-{}", run.id, req.format.as_str()))
    });
    let format = req.format;
    let job = Job {
        run: run.clone(),
        cfg,
        checkpoint,
        dtype: req.dtype,
        dataset,
        base_reference,
    };
    let dest2 = dest.clone();
    let (kind, files, next_step) =
        tokio::task::spawn_blocking(move || run_export(&job, format, &dest2, &progress))
            .await
            .map_err(internal)??;
    let report = ExportReport {
        run_id: run.id.clone(),
        format,
        kind,
        path: std::fs::canonicalize(&dest)
            .unwrap_or(dest)
            .display()
            .to_string(),
        checkpoint: which,
        files,
        seconds: started.elapsed().as_secs_f64(),
        next_step,
    };
    sqlx::query(
        "INSERT INTO exports (run_id, format, kind, path, checkpoint, bytes, app_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&report.run_id)
    .bind(format.as_str())
    .bind(&report.kind)
    .bind(&report.path)
    .bind(&report.checkpoint)
    .bind(report.files.iter().map(|f| f.bytes as i64).sum::<i64>())
    .bind(APP_VERSION)
    .execute(store.pool())
    .await?;
    Ok(report)
}

type Exported = (String, Vec<ExportedFile>, Option<String>);

fn run_export(
    job: &Job,
    format: ExportFormat,
    dest: &Path,
    progress: &dyn Fn(&str),
) -> Result<Exported, RunError> {
    let model_path = PathBuf::from(&job.run.model_path);
    progress("reading the base model");
    let source = ModelSource::open(&model_path).map_err(|e| user(e.to_string()))?;
    let method = job.cfg.method;
    // what an Ollama folder will hold decides which storage types it takes: check before work
    let ollama_adapter = has_gguf_adapter_form(method) && source.kind == SourceKind::Gguf;
    let ollama_gguf = source.kind == SourceKind::Gguf || gguf_tokenizer_ok(&source);
    if format == ExportFormat::Ollama {
        match job.dtype.as_deref() {
            Some(c) if ollama_gguf => gguf_dtype(Some(c), GgmlDType::F32).map(|_| ())?,
            Some(c) => parse_merged_dtype(c).map(|_| ())?,
            None => {}
        }
    }
    progress("hashing the base model");
    let base = base_identity(&model_path, source.kind)?;
    let manifest = |kind: &str| {
        json!({
            "whetstone_version": APP_VERSION,
            "kind": kind,
            "format": format.as_str(),
            "run_id": job.run.id,
            "method": method.as_str(),
            "base_model": base,
            "dataset": job.dataset,
            "checkpoint": job.checkpoint.file_name().map(|n| n.to_string_lossy().into_owned()),
            "dtype": job.dtype,
            "config": serde_json::from_str::<Value>(&job.run.config).unwrap_or(Value::Null),
        })
    };
    match format {
        ExportFormat::Peft => {
            let kind = "peft_adapter";
            let files = write_export(dest, manifest(kind), |stage| {
                progress("writing the PEFT adapter");
                peft(job, &source, stage)
            })?;
            Ok((kind.into(), files, None))
        }
        ExportFormat::Merged => {
            let kind = "merged_model";
            let dtype = merged_dtype(job.dtype.as_deref(), &source)?;
            let files = write_export(dest, manifest(kind), |stage| {
                merged_folder(job, &source, stage, dtype, progress)
            })?;
            Ok((kind.into(), files, None))
        }
        ExportFormat::Gguf => {
            if has_gguf_adapter_form(method) {
                let kind = "gguf_adapter";
                let dtype = gguf_dtype(job.dtype.as_deref(), GgmlDType::F32)?;
                let files = write_export(dest, manifest(kind), |stage| {
                    progress("writing the GGUF adapter");
                    gguf_adapter(job, &source, &stage.join("adapter.gguf"), dtype)
                })?;
                Ok((kind.into(), files, None))
            } else {
                let kind = "gguf_model";
                let dtype = gguf_dtype(job.dtype.as_deref(), GgmlDType::F16)?;
                let files = write_export(dest, manifest(kind), |stage| {
                    gguf_model(job, &source, &stage.join("model.gguf"), dtype, progress)
                })?;
                Ok((kind.into(), files, None))
            }
        }
        ExportFormat::Ollama => {
            let name = crate::models::slug(&format!("{}-{}", source.name, job.run.id));
            let dest_abs = absolute(dest);
            let next = format!(
                "ollama create {name} -f {}",
                dest_abs.join("Modelfile").display()
            );
            let adapter = ollama_adapter;
            let kind = if adapter {
                "ollama_adapter"
            } else {
                "ollama_model"
            };
            let files = write_export(dest, manifest(kind), |stage| {
                let from = if adapter {
                    progress("writing the GGUF adapter");
                    let dtype = gguf_dtype(job.dtype.as_deref(), GgmlDType::F32)?;
                    gguf_adapter(job, &source, &stage.join("adapter.gguf"), dtype)?;
                    absolute(&model_path).display().to_string()
                } else if ollama_gguf {
                    let dtype = gguf_dtype(job.dtype.as_deref(), GgmlDType::F16)?;
                    gguf_model(job, &source, &stage.join("model.gguf"), dtype, progress)?;
                    "./model.gguf".into()
                } else {
                    // a tokenizer GGUF cannot describe: Ollama converts Llama / Mistral / Qwen2
                    // safetensors folders itself
                    let sub = stage.join("model");
                    std::fs::create_dir(&sub).map_err(internal)?;
                    let dtype = merged_dtype(job.dtype.as_deref(), &source)?;
                    merged_folder(job, &source, &sub, dtype, progress)?;
                    "./model".into()
                };
                let text = modelfile(&source, &from, adapter.then_some("./adapter.gguf"));
                std::fs::write(stage.join("Modelfile"), text).map_err(internal)?;
                std::fs::write(
                    stage.join("README.md"),
                    format!(
                        "# {name}\n\nA {} fine-tune of {} made with Whetstone {APP_VERSION} (run {}).\n\nLoad it into Ollama from this folder:\n\n```sh\n{next}\nollama run {name}\n```\n",
                        method.as_str(),
                        source.name,
                        job.run.id
                    ),
                )
                .map_err(internal)?;
                Ok(())
            })?;
            Ok((kind.into(), files, Some(next)))
        }
    }
}

/// Whether an HF folder's tokenizer can be written into a GGUF model.
fn gguf_tokenizer_ok(source: &ModelSource) -> bool {
    whetstone_formats::tokenizer::gguf_tokenizer_metadata(
        &source.tokenizer,
        source.config.vocab_size,
        None,
        &source.path,
    )
    .is_ok()
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

fn parse_merged_dtype(choice: &str) -> Result<DType, RunError> {
    match choice {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(user(format!(
            "--dtype: `{other}` is not one of f32, f16, bf16 for a merged model"
        ))),
    }
}

fn merged_dtype(choice: Option<&str>, source: &ModelSource) -> Result<DType, RunError> {
    if let Some(c) = choice {
        return parse_merged_dtype(c);
    }
    // the base's own storage type, where it has one; f16 for a (quantized) GGUF base
    Ok(match source.kind {
        SourceKind::Gguf => DType::F16,
        SourceKind::HfFolder => match std::fs::read_to_string(source.path.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| {
                v.get("torch_dtype")
                    .or_else(|| v.get("dtype"))
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .as_deref()
        {
            Some("bfloat16") => DType::BF16,
            Some("float16") => DType::F16,
            _ => DType::F32,
        },
    })
}

/// Refuse a `--dtype` the format cannot store before any work starts.
fn check_dtype(format: ExportFormat, choice: Option<&str>) -> Result<(), RunError> {
    let Some(c) = choice else { return Ok(()) };
    match format {
        ExportFormat::Peft => Err(user(
            "--dtype: a PEFT export keeps the checkpoint's tensors as they are; leave --dtype out",
        )),
        ExportFormat::Merged => parse_merged_dtype(c).map(|_| ()),
        ExportFormat::Gguf => gguf_dtype(Some(c), GgmlDType::F32).map(|_| ()),
        // which list applies depends on what the folder will hold, known once the base is
        // open: `run_export` checks it then, before any slow work
        ExportFormat::Ollama => Ok(()),
    }
}

fn gguf_dtype(choice: Option<&str>, default: GgmlDType) -> Result<GgmlDType, RunError> {
    match choice {
        None => Ok(default),
        Some("f32") => Ok(GgmlDType::F32),
        Some("f16") => Ok(GgmlDType::F16),
        Some("q8_0") => Ok(GgmlDType::Q8_0),
        Some(other) => Err(user(format!(
            "--dtype: `{other}` is not one of f32, f16, q8_0 for a GGUF file"
        ))),
    }
}

fn torch_dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

#[cfg(test)]
mod tests;
