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

/// PEFT can describe this method's checkpoint.
fn has_peft_form(m: MethodKind) -> bool {
    m.is_lora() || m == MethodKind::Ia3 || m == MethodKind::PromptTuning || m.is_prefix()
}

/// llama.cpp can load this method's checkpoint as a LoRA adapter (DoRA's magnitudes it
/// cannot).
fn has_gguf_adapter_form(m: MethodKind) -> bool {
    m.is_lora() && m != MethodKind::Dora
}

fn can_merge(m: MethodKind) -> bool {
    !matches!(
        m,
        MethodKind::Adapter
            | MethodKind::PromptTuning
            | MethodKind::PrefixTuning
            | MethodKind::PTuningV2
    )
}

/// Check that `format` can express a run of `method`, before anything is loaded.
pub fn check_format(method: MethodKind, format: ExportFormat) -> Result<(), String> {
    let name = method.as_str();
    match format {
        ExportFormat::Peft if !has_peft_form(method) => Err(format!(
            "a `{name}` run has no PEFT adapter form (PEFT describes LoRA, QLoRA, LoRA+, DoRA, (IA)3, prompt and prefix tuning); export it with --format merged"
        )),
        ExportFormat::Merged | ExportFormat::Gguf | ExportFormat::Ollama
            if !can_merge(method) && !has_gguf_adapter_form(method) =>
        {
            Err(format!(
                "a `{name}` run cannot be {}: {}; export it with --format peft{}",
                if format == ExportFormat::Merged { "merged into the base" } else { "expressed in GGUF" },
                match method {
                    MethodKind::Adapter => "Houlsby adapters add layers the base architecture does not have",
                    MethodKind::PromptTuning => "prompt tuning adds virtual tokens no base weight can hold",
                    _ => "prefix tuning adds key/value positions no base weight can hold",
                },
                if method == MethodKind::Adapter { " — which does not describe them either; use the checkpoint folder with whetstone's --adapter" } else { "" }
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

/// The PEFT folder: the checkpoint's adapter files (tensors re-written with PEFT's header
/// metadata) and a model card.
fn peft(job: &Job, source: &ModelSource, stage: &Path) -> Result<(), RunError> {
    let ck = &job.checkpoint;
    let cfg_path = ck.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| user(format!("{}: {e}", cfg_path.display())))?;
    let mut cfg: Value =
        serde_json::from_str(&text).map_err(|e| user(format!("{}: {e}", cfg_path.display())))?;
    cfg["base_model_name_or_path"] = json!(job.base_reference.clone());
    cfg["revision"] = Value::Null;
    write_json(&stage.join("adapter_config.json"), &cfg)?;
    let wf = ck.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&wf, &Device::Cpu)
        .map_err(|e| user(format!("{}: {e}", wf.display())))?;
    let mut named: Vec<(String, Tensor)> = tensors.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    save_safetensors(&stage.join("adapter_model.safetensors"), &named)
        .map_err(|e| user(e.to_string()))?;
    std::fs::write(stage.join("README.md"), model_card(job, source, &cfg)).map_err(internal)?;
    Ok(())
}

fn model_card(job: &Job, source: &ModelSource, peft_cfg: &Value) -> String {
    let cfg = &job.cfg;
    let summary: Value = job
        .run
        .summary
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let num = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.4}"));
    let settings: Vec<String> = [
        ("method", json!(cfg.method.as_str())),
        ("peft_type", peft_cfg["peft_type"].clone()),
        ("learning rate", json!(cfg.lr)),
        ("batch size", json!(cfg.batch_size)),
        ("gradient accumulation", json!(cfg.grad_accum)),
        ("max steps", json!(cfg.max_steps)),
        ("sequence length", json!(cfg.seq_len)),
        ("seed", json!(cfg.seed)),
        ("r", peft_cfg["r"].clone()),
        ("lora_alpha", peft_cfg["lora_alpha"].clone()),
        ("target_modules", peft_cfg["target_modules"].clone()),
        ("use_rslora", peft_cfg["use_rslora"].clone()),
        ("use_dora", peft_cfg["use_dora"].clone()),
        ("num_virtual_tokens", peft_cfg["num_virtual_tokens"].clone()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_null())
    .map(|(k, v)| format!("| {k} | {} |", v.to_string().trim_matches('"')))
    .collect();
    format!(
        "---\nbase_model: {base}\nlibrary_name: peft\ntags:\n- whetstone\n- {method}\n---\n\n\
# {name} — {method} adapter\n\n\
Fine-tuned with Whetstone {APP_VERSION} (run `{run}`) from `{base}` ({family}, \
{params} parameters) on the dataset `{dataset}` ({records} records, sha256 `{sha}`).\n\n\
## Use\n\n```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n\
base = AutoModelForCausalLM.from_pretrained(\"{base}\")\nmodel = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n```\n\n\
## Training\n\n| setting | value |\n|---|---|\n{settings}\n\n\
## Results\n\n| metric | value |\n|---|---|\n| steps | {steps} |\n| best eval loss | {best} |\n| final train loss | {last} |\n| tokens/s | {tps} |\n",
        base = job.base_reference,
        method = cfg.method.as_str(),
        name = source.name,
        run = job.run.id,
        family = source.config.family.as_str(),
        params = source.config.parameter_count(),
        dataset = job.dataset["name"].as_str().unwrap_or(&job.run.dataset_id),
        records = job.dataset["records"],
        sha = job.dataset["sha256"].as_str().unwrap_or("?"),
        settings = settings.join("\n"),
        steps = job.run.steps_done,
        best = num(job.run.best_eval_loss),
        last = num(job.run.final_train_loss),
        tps = summary["tokens_per_s"]
            .as_f64()
            .map_or("—".into(), |x| format!("{x:.1}")),
    )
}

/// The base with the checkpoint applied and folded in, as HF-named tensors in `dtype`.
fn merged_tensors(
    job: &Job,
    source_path: &Path,
    dtype: DType,
    progress: &dyn Fn(&str),
) -> Result<(whetstone_engine::DecoderModel, Vec<(String, Tensor)>), RunError> {
    progress("loading the base model with the adapter");
    let loaded = crate::inference::load(source_path, "cpu", Some(&job.checkpoint), false)
        .map_err(|e| user(e.to_string()))?;
    let mut model = loaded.model;
    progress("merging the adapter into the weights");
    merge::merge_in_place(&mut model).map_err(user)?;
    let tensors = merge::hf_tensors(&mut model)
        .and_then(|ts| {
            ts.into_iter()
                .map(|(n, t)| Ok((n, t.to_dtype(dtype)?)))
                .collect::<candle_core::Result<Vec<_>>>()
        })
        .map_err(internal)?;
    Ok((model, tensors))
}

/// An HF model folder with the adapter merged in.
fn merged_folder(
    job: &Job,
    source: &ModelSource,
    stage: &Path,
    dtype: DType,
    progress: &dyn Fn(&str),
) -> Result<(), RunError> {
    let (model, tensors) = merged_tensors(job, &source.path, dtype, progress)?;
    progress("writing model.safetensors");
    save_safetensors(&stage.join("model.safetensors"), &tensors)
        .map_err(|e| user(e.to_string()))?;
    drop(tensors);
    let biases = merge::bias_layout(&model);
    let mut config = source
        .config
        .to_hf_json(torch_dtype_name(dtype), biases)
        .map_err(|e| {
            user(format!(
                "the merged model cannot be described as an HF config: {e}"
            ))
        })?;
    if source.kind == SourceKind::HfFolder {
        // keep what the original config says beyond the architecture (pad id, init range...)
        if let Ok(Value::Object(orig)) = std::fs::read_to_string(source.path.join("config.json"))
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            let mut merged = orig;
            if merged.contains_key("dtype") {
                // newer transformers name the storage type `dtype`
                merged.insert("dtype".into(), json!(torch_dtype_name(dtype)));
            }
            for (k, v) in config.as_object().cloned().unwrap_or_default() {
                if !v.is_null() || !merged.contains_key(&k) {
                    merged.insert(k, v);
                }
            }
            config = Value::Object(merged);
        }
    }
    write_json(&stage.join("config.json"), &config)?;
    progress("writing the tokenizer files");
    tokenizer_files(source, stage)
}

/// `tokenizer.json`, `tokenizer_config.json` (with the chat template) and
/// `generation_config.json`: copied from an HF folder, written from a GGUF base's metadata.
fn tokenizer_files(source: &ModelSource, stage: &Path) -> Result<(), RunError> {
    if source.kind == SourceKind::HfFolder {
        let mut copied_generation = false;
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json",
            "tokenizer.model",
            "chat_template.jinja",
        ] {
            let f = source.path.join(name);
            if f.exists() {
                copy(&f, &stage.join(name))?;
                copied_generation |= name == "generation_config.json";
            }
        }
        if copied_generation {
            return Ok(());
        }
    } else {
        write_json(&stage.join("tokenizer.json"), &source.tokenizer.json)?;
        let tok = &source.tokenizer;
        let mut tc = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": false,
            "model_max_length": source.config.max_position_embeddings,
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
        });
        if let Some(t) = &source.chat_template {
            tc["chat_template"] = json!(t);
        }
        write_json(&stage.join("tokenizer_config.json"), &tc)?;
    }
    let c = &source.config;
    let eos = match c.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    write_json(
        &stage.join("generation_config.json"),
        &json!({"bos_token_id": c.bos_token_id, "eos_token_id": eos, "do_sample": false}),
    )
}

/// The LoRA checkpoint as a llama.cpp adapter.
fn gguf_adapter(
    job: &Job,
    source: &ModelSource,
    out: &Path,
    dtype: GgmlDType,
) -> Result<(), RunError> {
    gguf_out::check_llama_cpp_math(&source.config)
        .map_err(|e| user(format!("cannot export as GGUF: {e}")))?;
    let ck = &job.checkpoint;
    let wf = ck.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&wf, &Device::Cpu)
        .map_err(|e| user(format!("{}: {e}", wf.display())))?;
    let cfg = &job.cfg.lora;
    let scale_alpha = if cfg.rslora {
        cfg.alpha * (cfg.r as f64).sqrt()
    } else {
        cfg.alpha
    };
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort_by_key(|n| tensor_order(n));
    let mut out_tensors = vec![];
    for name in names {
        // base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight
        let hf = name.strip_prefix("base_model.model.").unwrap_or(name);
        let (module, which) = if let Some(m) = hf.strip_suffix(".lora_A.weight") {
            (m, "lora_a")
        } else if let Some(m) = hf.strip_suffix(".lora_B.weight") {
            (m, "lora_b")
        } else {
            return Err(user(format!(
                "{}: tensor `{name}` is not a LoRA matrix; llama.cpp adapters hold only lora_A / lora_B",
                wf.display()
            )));
        };
        let base_name = format!("{module}.weight");
        let g = gguf_out::gguf_name(&base_name, source.config.family).ok_or_else(|| {
            user(format!(
                "{}: `{module}` has no llama.cpp counterpart",
                wf.display()
            ))
        })?;
        let mut t = tensors[name].clone();
        if which == "lora_b" {
            if let Some(heads) = gguf_out::qk_heads(&base_name, &source.config) {
                t = gguf_out::permute_qk(&t, heads).map_err(internal)?;
            }
        }
        let q = gguf_out::to_qtensor(&t, dtype).map_err(internal)?;
        out_tensors.push((format!("{g}.{which}"), q));
    }
    let name = format!(
        "{} {} adapter ({})",
        source.name,
        job.cfg.method.as_str(),
        job.run.id
    );
    let md = gguf_out::adapter_metadata(&source.config, scale_alpha as f32, &name);
    gguf_out::write(out, &md, &out_tensors).map_err(user)
}

/// Sort key: layer number, then name, so files list layer 2 before layer 10.
fn tensor_order(name: &str) -> (usize, String) {
    let layer = name
        .split("layers.")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    (layer, name.to_string())
}

/// The whole merged model as GGUF. From a GGUF base: its metadata (tokenizer, chat template,
/// hyperparameters) and tensor order. From an HF folder: metadata written from the config and
/// `tokenizer.json` (byte-level BPE tokenizers), Llama 3 rope scaling as `rope_freqs.weight`.
fn gguf_model(
    job: &Job,
    source: &ModelSource,
    out: &Path,
    dtype: GgmlDType,
    progress: &dyn Fn(&str),
) -> Result<(), RunError> {
    let cfg = &source.config;
    gguf_out::check_llama_cpp_math(cfg).map_err(|e| user(format!("cannot export as GGUF: {e}")))?;
    // refuse a tokenizer llama.cpp cannot be told about before the slow part
    let tokenizer_md = match source.gguf_content() {
        Some(_) => vec![],
        None => whetstone_formats::tokenizer::gguf_tokenizer_metadata(
            &source.tokenizer,
            cfg.vocab_size,
            source.chat_template.as_deref(),
            &source.path.join("tokenizer.json"),
        )
        .map_err(|e| user(e.to_string()))?,
    };
    let (model, tensors) = merged_tensors(job, &source.path, DType::F32, progress)?;
    // biases BitFit added must be ones the architecture's loader asks for
    cfg.to_hf_json("float32", merge::bias_layout(&model))
        .map_err(|e| user(format!("the merged model cannot be written as GGUF: {e}")))?;
    progress("quantizing and writing model.gguf");
    // llama.cpp's layout: Q/K rows interleaved for the `llama` architecture, Gemma's norm
    // weights stored as 1 + w
    let convert = |hf: &str, t: Tensor| -> Result<candle_core::quantized::QTensor, RunError> {
        let t = match gguf_out::qk_heads(hf, cfg) {
            Some(h) => gguf_out::permute_qk(&t, h).map_err(internal)?,
            None => t,
        };
        let t = match whetstone_formats::weights::gguf_norm_shift(hf, cfg.family) {
            Some(shift) => (t + shift).map_err(internal)?,
            None => t,
        };
        gguf_out::to_qtensor(&t, dtype).map_err(internal)
    };
    let f32_tensor = |t: &Tensor| gguf_out::to_qtensor(t, GgmlDType::F32).map_err(internal);
    let mut by_name: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut out_tensors = vec![];
    let md = match source.gguf_content() {
        Some(content) => {
            let mut infos: Vec<(&String, u64)> = content
                .tensor_infos
                .iter()
                .map(|(n, i)| (n, i.offset))
                .collect();
            infos.sort_by_key(|(_, off)| *off);
            let mut file = std::fs::File::open(&source.path).map_err(internal)?;
            for (gname, _) in infos {
                match whetstone_formats::weights::hf_name(gname, cfg.family) {
                    Some(hf) if by_name.contains_key(&hf) => {
                        let t = by_name.remove(&hf).expect("checked");
                        out_tensors.push((gname.clone(), convert(&hf, t)?));
                    }
                    // tensors with no HF counterpart (rope_freqs) are copied as they are
                    _ => {
                        let q = content
                            .tensor(&mut file, gname, &Device::Cpu)
                            .map_err(|e| user(format!("{}: {e}", source.path.display())))?;
                        let t = q.dequantize(&Device::Cpu).map_err(internal)?;
                        out_tensors.push((gname.clone(), f32_tensor(&t)?));
                    }
                }
            }
            let mut md: Vec<(String, GgufValue)> = content
                .metadata
                .iter()
                // candle's writer always aligns to 32 bytes; the base's own value would lie
                .filter(|(k, _)| !matches!(k.as_str(), "general.file_type" | "general.alignment"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            md.push((
                "general.file_type".into(),
                GgufValue::U32(gguf_out::file_type(dtype)),
            ));
            md
        }
        None => {
            if let Some(whetstone_formats::RopeScaling::Llama3 { .. }) = &cfg.rope_scaling {
                // llama.cpp divides each rotary frequency by its factor
                let scaled = whetstone_engine::model::rope_inv_freq(cfg);
                let plain =
                    whetstone_engine::model::rope_inv_freq(&whetstone_formats::ModelConfig {
                        rope_scaling: None,
                        ..cfg.clone()
                    });
                let factors: Vec<f32> = plain.iter().zip(&scaled).map(|(p, s)| p / s).collect();
                let n = factors.len();
                let t = Tensor::from_vec(factors, n, &Device::Cpu).map_err(internal)?;
                out_tensors.push(("rope_freqs.weight".into(), f32_tensor(&t)?));
            } else if let Some(whetstone_formats::RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            }) = &cfg.rope_scaling
            {
                // Phi-3: llama.cpp picks the long set when its context exceeds the original
                for (name, factors) in [
                    ("rope_factors_short.weight", short_factor),
                    ("rope_factors_long.weight", long_factor),
                ] {
                    let v: Vec<f32> = factors.iter().map(|&x| x as f32).collect();
                    let t = Tensor::from_vec(v, factors.len(), &Device::Cpu).map_err(internal)?;
                    out_tensors.push((name.into(), f32_tensor(&t)?));
                }
            } else if let Some(whetstone_formats::RopeScaling::Factors { .. }) = &cfg.rope_scaling {
                return Err(internal(
                    "per-frequency rope factors come only from GGUF bases",
                ));
            }
            let tokens: Vec<&str> = tokenizer_md
                .iter()
                .find(|(k, _)| k == "tokenizer.ggml.tokens")
                .and_then(|(_, v)| v.to_vec().ok())
                .map(|v| {
                    v.iter()
                        .filter_map(|t| t.to_string().ok())
                        .map(|t| t.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let name = gguf_out::llama_cpp_model_name(&source.name, &tokens);
            let mut md = gguf_out::model_metadata(cfg, &name, gguf_out::file_type(dtype));
            md.extend(tokenizer_md);
            md
        }
    };
    // every tensor not placed yet, in model order: all of them for an HF base; biases BitFit
    // added or an untied head for a GGUF base
    let mut rest: Vec<(String, Tensor)> = by_name.into_iter().collect();
    rest.sort_by_key(|a| tensor_order(&a.0));
    for (hf, t) in rest {
        let g = gguf_out::gguf_name(&hf, cfg.family)
            .ok_or_else(|| internal(format!("`{hf}` has no GGUF name")))?;
        out_tensors.push((g, convert(&hf, t)?));
    }
    gguf_out::write(out, &md, &out_tensors).map_err(user)
}

/// The chat format of a Jinja chat template, in Ollama's template syntax, with its stop words.
fn ollama_template(jinja: &str) -> Option<(&'static str, &'static [&'static str])> {
    if jinja.contains("<|im_start|>") {
        Some((
            "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n",
            &["<|im_start|>", "<|im_end|>"],
        ))
    } else if jinja.contains("<|start_header_id|>") {
        Some((
            "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>",
            &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        ))
    } else if jinja.contains("[INST]") {
        Some((
            "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]{{ .Response }}</s>",
            &["[INST]", "[/INST]"],
        ))
    } else {
        None
    }
}

/// An Ollama `Modelfile`.
pub fn modelfile(source: &ModelSource, from: &str, adapter: Option<&str>) -> String {
    let mut s = format!(
        "# Made by Whetstone {APP_VERSION}. Load it with: ollama create <name> -f Modelfile\nFROM {from}\n"
    );
    if let Some(a) = adapter {
        s.push_str(&format!("ADAPTER {a}\n"));
    }
    let mut stops: Vec<String> = vec![];
    match source.chat_template.as_deref().and_then(ollama_template) {
        Some((template, stop)) => {
            s.push_str(&format!("TEMPLATE \"\"\"{template}\"\"\"\n"));
            stops.extend(stop.iter().map(|x| x.to_string()));
        }
        None => s.push_str(
            "# no TEMPLATE: this chat format has no known Ollama equivalent; Ollama falls back to the GGUF's own template\n",
        ),
    }
    if let Some(eos) = &source.tokenizer.eos_token {
        if !stops.contains(eos) {
            stops.push(eos.clone());
        }
    }
    for stop in stops {
        s.push_str(&format!("PARAMETER stop \"{stop}\"\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_refuse_methods_they_cannot_hold() {
        assert!(check_format(MethodKind::Lora, ExportFormat::Gguf).is_ok());
        assert!(check_format(MethodKind::Dora, ExportFormat::Gguf).is_ok()); // merged model
        let e = check_format(MethodKind::Full, ExportFormat::Peft).unwrap_err();
        assert!(e.contains("--format merged"), "{e}");
        let e = check_format(MethodKind::PromptTuning, ExportFormat::Merged).unwrap_err();
        assert!(e.contains("--format peft"), "{e}");
        let e = check_format(MethodKind::Adapter, ExportFormat::Ollama).unwrap_err();
        assert!(e.contains("Houlsby"), "{e}");
        for f in ExportFormat::ALL {
            assert_eq!(f.as_str().parse::<ExportFormat>().unwrap(), f);
        }
        assert!("zip".parse::<ExportFormat>().unwrap_err().contains("peft"));
    }

    #[test]
    fn a_failed_export_leaves_nothing_and_a_stale_stage_is_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        // a stage from a process that no longer exists
        let stale = tmp
            .path()
            .join(format!("{}999999999", staging_prefix(&dest)));
        std::fs::create_dir(&stale).unwrap();
        let e = write_export(&dest, json!({}), |stage| {
            std::fs::write(stage.join("half.bin"), b"partial").unwrap();
            Err(user("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // a complete export replaces an earlier one and lists its files
        for round in 0..2 {
            let manifest = json!({"whetstone_version": "x", "run_id": "run-1", "round": round});
            let files = write_export(&dest, manifest, |stage| {
                std::fs::write(stage.join("a.txt"), format!("{round}")).map_err(internal)
            })
            .unwrap();
            assert_eq!(files.len(), 1);
            let m: Value =
                serde_json::from_str(&std::fs::read_to_string(dest.join("manifest.json")).unwrap())
                    .unwrap();
            assert_eq!(m["round"], round);
            assert_eq!(m["files"][0]["name"], "a.txt");
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // a folder that is not an export of ours is never replaced
        let mine = tmp.path().join("documents");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("thesis.txt"), b"keep me").unwrap();
        let e = write_export(&mine, json!({}), |_| Ok(())).unwrap_err();
        assert!(
            e.to_string().contains("not an earlier Whetstone export"),
            "{e}"
        );
        assert_eq!(std::fs::read(mine.join("thesis.txt")).unwrap(), b"keep me");
    }

    #[test]
    fn chatml_templates_become_ollama_templates() {
        let (t, stops) =
            ollama_template("{% for m in messages %}<|im_start|>{{ m.role }}").unwrap();
        assert!(t.contains("{{ .Prompt }}") && t.contains("<|im_start|>assistant"));
        assert!(stops.contains(&"<|im_end|>"));
        assert!(ollama_template("{{ bos_token }}{{ messages }}").is_none());
    }
}
