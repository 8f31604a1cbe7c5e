//! Model downloads from the Hugging Face hub (or any server speaking its API, e.g. a mirror
//! set with `HF_ENDPOINT`), with hf-hub.
//!
//! Before anything is fetched, the repository's info and file list say how large the
//! download is, what licence the model carries and whether it is gated; a download that would
//! not fit on the disk, or a gated model without a token, stops there with the reason. Only
//! what Whetstone reads is fetched (config, tokenizer, generation config, safetensors shards
//! and their index), into `models/hub/<owner>--<name>/` in the data directory. Each file is
//! written to `<name>.partial`, continued with an HTTP range request after a dropped
//! connection or an interrupted process, checked against the size and (for LFS files) the
//! sha256 the hub lists, and renamed into place. Progress reports bytes, speed and ETA.
//!
//! A token (for gated models) comes from `HF_TOKEN` or the OS keychain (see [`token`]); it is
//! sent to the hub and nowhere else: never stored in the database, printed or put in events.

use futures::StreamExt;
use hf_hub::repository::RepoTreeEntry;
use hf_hub::HFClient;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Files an HF model folder needs for Whetstone (everything else in a repo is skipped).
pub const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "*.safetensors",
    "model.safetensors.index.json",
];

/// Attempts per file before a download gives up (each continues where the last stopped).
const ATTEMPTS: usize = 6;

fn wanted(path: &str) -> bool {
    !path.contains('/')
        && MODEL_FILES.iter().any(|p| match p.strip_prefix('*') {
            Some(suffix) => path.ends_with(suffix),
            None => *p == path,
        })
}

/// What a download reports as it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, ts_rs::TS)]
#[ts(export)]
pub struct DownloadProgress {
    pub files_total: usize,
    pub files_done: usize,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// Over the last few seconds.
    pub bytes_per_s: f64,
    /// Seconds left at that speed (`None` until there is a speed).
    pub eta_s: Option<f64>,
}

/// One file of a repository, as the hub lists it.
#[derive(Debug, Clone, serde::Serialize, ts_rs::TS)]
#[ts(export)]
pub struct HubFile {
    pub path: String,
    pub size: u64,
    /// The LFS object's sha256, when the hub gives one.
    pub sha256: Option<String>,
}

/// What the hub says about a model before anything is downloaded.
#[derive(Debug, Clone, serde::Serialize, ts_rs::TS)]
#[ts(export)]
pub struct HubModelInfo {
    pub repo: String,
    pub revision: Option<String>,
    /// Only the files Whetstone would fetch.
    pub files: Vec<HubFile>,
    pub total_bytes: u64,
    pub license: Option<String>,
    pub gated: bool,
}

/// A download's progress as the window hears it.
#[derive(Debug, Clone, serde::Serialize, ts_rs::TS)]
#[ts(export)]
pub struct DownloadUpdate {
    pub repo: String,
    #[serde(flatten)]
    pub progress: DownloadProgress,
}

/// Whether a hub token is available, and from where (never the token itself).
#[derive(Debug, Clone, serde::Serialize, ts_rs::TS)]
#[ts(export)]
pub struct TokenStatus {
    pub present: bool,
    /// `keychain`, `HF_TOKEN` or `none`.
    pub source: String,
}

/// `owner/name` from `hf:owner/name` (or `owner/name`), checked for shape.
pub fn parse_repo_id(reference: &str) -> Result<(String, String), String> {
    let id = reference.strip_prefix("hf:").unwrap_or(reference);
    match id.split_once('/') {
        Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((o.to_string(), n.to_string()))
        }
        _ => Err(format!(
            "`{reference}` is not a hub model id: expected hf:owner/name"
        )),
    }
}

/// The hub token: `HF_TOKEN`, else the one `whetstone hub login` put in the OS keychain.
pub mod token {
    const SERVICE: &str = "whetstone";
    const USER: &str = "huggingface";

    fn entry() -> Result<keyring::Entry, String> {
        keyring::Entry::new(SERVICE, USER)
            .map_err(|e| format!("the OS keychain is not available: {e}"))
    }

    /// Store the token in the OS keychain (never in the data directory).
    pub fn store(token: &str) -> Result<(), String> {
        let token = token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err("the token is empty or contains spaces".into());
        }
        entry()?
            .set_password(token)
            .map_err(|e| format!("cannot store the token in the OS keychain: {e}"))
    }

    pub fn remove() -> Result<bool, String> {
        match entry()?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(format!("cannot remove the token from the OS keychain: {e}")),
        }
    }

    /// The token to send, if any: `HF_TOKEN` first, then the keychain.
    pub fn get() -> Option<String> {
        if let Ok(t) = std::env::var("HF_TOKEN") {
            if !t.trim().is_empty() {
                return Some(t.trim().to_string());
            }
        }
        entry().ok()?.get_password().ok()
    }

    /// Where the token comes from, for `doctor` and the settings screen (never the token).
    pub fn source() -> &'static str {
        if std::env::var("HF_TOKEN").is_ok_and(|t| !t.trim().is_empty()) {
            "HF_TOKEN"
        } else if entry().ok().and_then(|e| e.get_password().ok()).is_some() {
            "keychain"
        } else {
            "none"
        }
    }

    pub fn status() -> super::TokenStatus {
        let source = source();
        super::TokenStatus {
            present: source != "none",
            source: source.to_string(),
        }
    }
}

fn client(reference: &str, endpoint: Option<&str>) -> Result<HFClient, String> {
    let mut builder = HFClient::builder().retry_max_attempts(3);
    if let Some(e) = endpoint {
        builder = builder.endpoint(e);
    }
    if let Some(t) = token::get() {
        builder = builder.token(t);
    }
    builder
        .build()
        .map_err(|e| format!("{reference}: cannot set up the hub client: {e}"))
}

/// The licence a model card or its tags declare.
fn license_of(info: &hf_hub::repository::ModelInfo) -> Option<String> {
    if let Some(l) = info
        .card_data
        .as_ref()
        .and_then(|c| c.get("license"))
        .and_then(|l| l.as_str())
    {
        return Some(l.to_string());
    }
    info.tags
        .as_ref()?
        .iter()
        .find_map(|t| t.strip_prefix("license:").map(str::to_string))
}

/// Repository info and the files Whetstone would fetch, without downloading them.
pub async fn model_info(reference: &str, endpoint: Option<&str>) -> Result<HubModelInfo, String> {
    let (owner, name) = parse_repo_id(reference)?;
    let client = client(reference, endpoint)?;
    let failed = |e: &dyn std::fmt::Display| {
        format!("{reference}: the hub at {} says: {e}", client.endpoint())
    };
    let repo = client.model(owner.as_str(), name.as_str());
    let info = repo.info().send().await.map_err(|e| failed(&e))?;
    let gated = match &info.gated {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => !s.is_empty() && s != "false",
        _ => false,
    };
    let revision = info.sha.clone();
    let stream = repo
        .list_tree()
        .maybe_revision(revision.clone())
        .recursive(true)
        .send()
        .map_err(|e| failed(&e))?;
    futures::pin_mut!(stream);
    let mut files = vec![];
    while let Some(entry) = stream.next().await {
        if let RepoTreeEntry::File {
            path, size, lfs, ..
        } = entry.map_err(|e| failed(&e))?
        {
            if wanted(&path) {
                let size = lfs.as_ref().and_then(|l| l.size).unwrap_or(size);
                files.push(HubFile {
                    path,
                    size,
                    sha256: lfs.and_then(|l| l.sha256),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if !files.iter().any(|f| f.path == "config.json") {
        return Err(format!(
            "{reference}: the repository has no config.json; it is not a transformers model"
        ));
    }
    Ok(HubModelInfo {
        repo: format!("{owner}/{name}"),
        revision,
        total_bytes: files.iter().map(|f| f.size).sum(),
        files,
        license: license_of(&info),
        gated,
    })
}

/// Free bytes on the filesystem holding `dir` (`None` where it cannot be asked).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut probe = dir.to_path_buf();
        while !probe.exists() {
            probe = probe.parent()?.to_path_buf();
        }
        let c = std::ffi::CString::new(probe.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Refuse a download that cannot fit: `need` more bytes with `free` available (10 % and
/// 100 MiB kept spare for the database and checkpoints).
pub fn check_space(reference: &str, need: u64, free: Option<u64>) -> Result<(), String> {
    let Some(free) = free else { return Ok(()) };
    let spare = (free / 10).max(100 << 20);
    if need + spare > free {
        return Err(format!(
            "{reference}: needs {:.1} GiB more but the disk has {:.1} GiB free; free some space or set WHETSTONE_HOME to a larger disk",
            need as f64 / (1u64 << 30) as f64,
            free as f64 / (1u64 << 30) as f64
        ));
    }
    Ok(())
}

/// Bytes per second over the last few seconds.
struct Speed {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl Speed {
    fn new() -> Self {
        Self {
            samples: Default::default(),
        }
    }

    fn add(&mut self, done: u64) -> f64 {
        let now = Instant::now();
        if self.samples.back().is_some_and(|(_, b)| *b > done) {
            self.samples.clear(); // a file started over: the old samples say nothing now
        }
        self.samples.push_back((now, done));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(5))
        {
            self.samples.pop_front();
        }
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                (b1 - b0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

fn sha256_of(path: &Path) -> Result<String, String> {
    whetstone_formats::sha256_file(path).map_err(|e| e.to_string())
}

/// Download a model repo's files into `models_dir/hub/<owner>--<name>/` and return that folder.
/// `endpoint` overrides the hub URL (else `HF_ENDPOINT`, else huggingface.co).
pub async fn download_model(
    reference: &str,
    models_dir: &Path,
    endpoint: Option<&str>,
    report: impl Fn(DownloadProgress) + Send + Sync + 'static,
) -> Result<PathBuf, String> {
    let (owner, name) = parse_repo_id(reference)?;
    let dest = models_dir.join("hub").join(format!("{owner}--{name}"));
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
    let info = match (offline, complete_copy(&dest)) {
        (true, Some(_)) => return Ok(dest),
        (true, None) => {
            return Err(format!(
                "{reference}: HF_HUB_OFFLINE is set and the model has not been downloaded before"
            ))
        }
        (false, cached) => match model_info(reference, endpoint).await {
            Ok(info) => info,
            // the hub cannot be reached: a complete earlier download serves
            Err(_) if cached.is_some() => return Ok(dest),
            Err(e) => return Err(e),
        },
    };
    if info.gated && token::get().is_none() {
        return Err(format!(
            "{reference} is gated: accept its terms on the hub, then give Whetstone your token (`whetstone hub login`, or HF_TOKEN)"
        ));
    }
    std::fs::create_dir_all(&dest)
        .map_err(|e| format!("{}: cannot create: {e}", dest.display()))?;
    // The folder is complete again only when this download finishes. Files of an earlier
    // revision are kept only where their sha256 shows they did not change.
    let earlier = marker_revision(&dest);
    let _ = std::fs::remove_file(dest.join(COMPLETE_MARKER));
    if earlier.is_some() && earlier != info.revision {
        for f in &info.files {
            let t = dest.join(&f.path);
            let same = f
                .sha256
                .as_ref()
                .is_some_and(|want| sha256_of(&t).ok().as_ref() == Some(want));
            if t.exists() && !same {
                std::fs::remove_file(&t).map_err(|e| format!("{}: {e}", t.display()))?;
            }
        }
    }
    let present = |f: &HubFile| {
        let got = std::fs::metadata(dest.join(&f.path)).map(|m| m.len()).ok();
        let partial = std::fs::metadata(dest.join(format!("{}.partial", f.path)))
            .map(|m| m.len())
            .unwrap_or(0);
        if got == Some(f.size) {
            f.size
        } else {
            partial.min(f.size)
        }
    };
    let have: u64 = info.files.iter().map(present).sum();
    check_space(reference, info.total_bytes - have, free_bytes(&dest))?;

    let client = client(reference, endpoint)?;
    let repo = client.model(owner.as_str(), name.as_str());
    let mut p = DownloadProgress {
        files_total: info.files.len(),
        bytes_total: info.total_bytes,
        bytes_done: have,
        ..Default::default()
    };
    let mut speed = Speed::new();
    let mut last_report = Instant::now() - Duration::from_secs(1);
    report(p);
    for f in &info.files {
        let target = dest.join(&f.path);
        if std::fs::metadata(&target).map(|m| m.len()).ok() == Some(f.size) {
            p.files_done += 1;
            continue;
        }
        let part = dest.join(format!("{}.partial", f.path));
        if f.size == 0 {
            std::fs::write(&part, b"")
                .map_err(|e| format!("{}: cannot write: {e}", part.display()))?;
        }
        let mut attempts = 0;
        loop {
            let start = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if start > f.size {
                std::fs::remove_file(&part).map_err(|e| format!("{}: {e}", part.display()))?;
                continue;
            }
            if start == f.size {
                break;
            }
            let fail = |attempts: usize, e: &dyn std::fmt::Display| {
                format!(
                    "{reference}: {} stopped at {start} of {} bytes after {attempts} attempts: {e}",
                    f.path, f.size
                )
            };
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&part)
                .map_err(|e| format!("{}: cannot write: {e}", part.display()))?;
            let request = repo
                .download_file_stream()
                .filename(f.path.clone())
                .maybe_revision(info.revision.clone())
                .range(start..f.size)
                .send()
                .await;
            let mut stream = match request {
                Ok((_, s)) => s,
                Err(e) => {
                    attempts += 1;
                    if attempts >= ATTEMPTS {
                        return Err(fail(attempts, &e));
                    }
                    tokio::time::sleep(Duration::from_millis(200 << attempts.min(5))).await;
                    continue;
                }
            };
            let mut broken: Option<String> = None;
            let (wanted_bytes, mut written) = (f.size - start, 0u64);
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        if written + bytes.len() as u64 > wanted_bytes {
                            // more than the range asked for: the server sent the whole file
                            // from its start, so what we appended is misplaced; start over
                            drop(out);
                            std::fs::write(&part, b"")
                                .map_err(|e| format!("{}: cannot write: {e}", part.display()))?;
                            p.bytes_done = p.bytes_done.saturating_sub(start + written);
                            broken = Some("the server ignored the byte range".into());
                            break;
                        }
                        written += bytes.len() as u64;
                        out.write_all(&bytes)
                            .map_err(|e| format!("{}: cannot write: {e}", part.display()))?;
                        p.bytes_done += bytes.len() as u64;
                        if last_report.elapsed() >= Duration::from_millis(100) {
                            p.bytes_per_s = speed.add(p.bytes_done);
                            p.eta_s = (p.bytes_per_s > 0.0).then(|| {
                                (p.bytes_total.saturating_sub(p.bytes_done)) as f64 / p.bytes_per_s
                            });
                            report(p);
                            last_report = Instant::now();
                        }
                    }
                    Err(e) => {
                        broken = Some(e.to_string());
                        break;
                    }
                }
            }
            if broken.is_none() && written < wanted_bytes {
                broken = Some("the connection closed early".into());
            }
            if let Ok(out) = std::fs::OpenOptions::new().append(true).open(&part) {
                out.sync_all()
                    .map_err(|e| format!("{}: cannot write: {e}", part.display()))?;
            }
            if let Some(e) = broken {
                // the connection dropped mid-file: continue from what arrived
                attempts += 1;
                if attempts >= ATTEMPTS {
                    return Err(fail(attempts, &e));
                }
                tokio::time::sleep(Duration::from_millis(200 << attempts.min(5))).await;
            }
        }
        if let Some(want) = &f.sha256 {
            let got = sha256_of(&part)?;
            if &got != want {
                let _ = std::fs::remove_file(&part);
                return Err(format!(
                    "{reference}: {} arrived corrupted (sha256 {got}, the hub lists {want}); run the command again to fetch it anew",
                    f.path
                ));
            }
        }
        std::fs::rename(&part, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        p.files_done += 1;
        report(p);
    }
    let marker = serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?;
    crate::paths::write_atomically(&dest.join(COMPLETE_MARKER), marker.as_bytes())?;
    Ok(dest)
}

/// Written last into a download folder: the file list it was checked against.
const COMPLETE_MARKER: &str = ".whetstone-download.json";

/// The hub revision the folder's last complete download had.
fn marker_revision(dest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dest.join(COMPLETE_MARKER)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["revision"].as_str().map(str::to_string)
}

/// The file list of a finished download whose files are all still there at their sizes.
fn complete_copy(dest: &Path) -> Option<Vec<HubFile>> {
    #[derive(serde::Deserialize)]
    struct Marker {
        files: Vec<MarkerFile>,
    }
    #[derive(serde::Deserialize)]
    struct MarkerFile {
        path: String,
        size: u64,
    }
    let text = std::fs::read_to_string(dest.join(COMPLETE_MARKER)).ok()?;
    let m: Marker = serde_json::from_str(&text).ok()?;
    m.files
        .into_iter()
        .map(|f| {
            let len = std::fs::metadata(dest.join(&f.path)).ok()?.len();
            (len == f.size).then_some(HubFile {
                path: f.path,
                size: f.size,
                sha256: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_files_whetstone_reads_are_wanted() {
        assert!(wanted("model-00001-of-00002.safetensors") && wanted("config.json"));
        assert!(
            !wanted("pytorch_model.bin")
                && !wanted("README.md")
                && !wanted("onnx/model.safetensors")
        );
    }

    #[test]
    fn a_download_that_does_not_fit_is_refused() {
        let gib = 1u64 << 30;
        assert!(check_space("hf:a/b", gib, Some(10 * gib)).is_ok());
        let e = check_space("hf:a/b", 10 * gib, Some(10 * gib)).unwrap_err();
        assert!(
            e.contains("needs 10.0 GiB more but the disk has 10.0 GiB free"),
            "{e}"
        );
        assert!(check_space("hf:a/b", gib, None).is_ok());
        assert!(free_bytes(Path::new("/tmp/does/not/exist/yet")).is_some_and(|b| b > 0));
    }

    #[test]
    fn repo_ids_parse() {
        assert_eq!(
            parse_repo_id("hf:HuggingFaceTB/SmolLM2-135M").unwrap(),
            ("HuggingFaceTB".into(), "SmolLM2-135M".into())
        );
        assert!(parse_repo_id("hf:justaname").is_err());
        assert!(parse_repo_id("hf:a/b/c").is_err());
    }
}
