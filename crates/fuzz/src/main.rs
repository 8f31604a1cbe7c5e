//! `whetstone-fuzz`: a time-bounded, seeded fuzzer for every reader of files a user (or a
//! download) hands Whetstone: GGUF, safetensors, `config.json`, `tokenizer.json`, chat
//! templates and datasets.
//!
//! Each target starts from small valid files built in code and mutates them (bit flips,
//! boundary integers at length fields, truncation, splicing, JSON-aware changes, invalid
//! UTF-8, deep nesting, ...). Every case is written to a file and handed to the real public
//! readers under `catch_unwind`. A finding is: a panic; a single allocation larger than
//! `max(64 × input size, 16 MiB)` (requests over 1 GiB are refused outright, see `alloc`);
//! an error that spans several lines, does not name the file, or (where the reader knows
//! the field) does not name the field; a case that runs longer than `--case-timeout`.
//! The exit status is 1 when anything was found.

mod alloc;
mod mutate;
mod seeds;
mod targets;

use clap::Parser;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use targets::{names_field, Target};

#[global_allocator]
static ALLOC: alloc::Watched = alloc::Watched;

#[derive(Parser)]
#[command(about = "Fuzz Whetstone's file readers for a fixed time")]
struct Args {
    /// Wall-clock seconds for the whole run, shared evenly by the targets.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seed of the mutation streams (each target derives its own from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Targets run side by side (one thread each).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Only these targets (by name; repeatable). Default: all.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Where findings (inputs and what went wrong) are written.
    #[arg(long, default_value = "fuzz-findings")]
    findings: PathBuf,
    /// A case running longer than this is a finding (and ends the run).
    #[arg(long, default_value_t = 30)]
    case_timeout: u64,
    /// Run one file through one target (`--target`) and print what happened.
    #[arg(long)]
    replay: Option<PathBuf>,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What went wrong in one case.
struct Finding {
    kind: &'static str,
    detail: String,
}

/// Run one case: the readers on `path` under `catch_unwind`, with allocations watched.
fn run_case(target: &dyn Target, path: &Path, input_len: usize) -> (Vec<Finding>, usize) {
    alloc::arm(&path.display().to_string());
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| target.run(path)));
    let largest = alloc::disarm();
    let mut findings = vec![];
    let allowed = target.allowance(input_len);
    if largest > allowed {
        findings.push(Finding {
            kind: "allocation",
            detail: format!(
                "a single allocation of {largest} bytes for a {input_len}-byte input (allowed {allowed})"
            ),
        });
    }
    match result {
        Err(_) => {
            let what = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "panic".into());
            findings.push(Finding {
                kind: "panic",
                detail: what,
            });
        }
        Ok(rejections) => {
            for r in rejections {
                let m = &r.message;
                if m.contains('\n') || m.contains('\r') {
                    findings.push(Finding {
                        kind: "multi-line error",
                        detail: format!("{}: {m:?}", r.reader),
                    });
                }
                if !m.contains(&path.display().to_string()) {
                    findings.push(Finding {
                        kind: "error without the file",
                        detail: format!("{}: {m:?}", r.reader),
                    });
                }
                if r.must_name_field && !names_field(m, path) {
                    findings.push(Finding {
                        kind: "error without the field",
                        detail: format!("{}: {m:?}", r.reader),
                    });
                }
            }
        }
    }
    (findings, largest)
}

/// A printable copy of an input: escaped text when it is mostly text, else hex.
fn escaped(bytes: &[u8]) -> String {
    let text = bytes
        .iter()
        .filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        .count();
    if text * 10 >= bytes.len() * 9 {
        bytes.escape_ascii().to_string()
    } else {
        bytes
            .chunks(32)
            .enumerate()
            .map(|(i, c)| {
                let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
                format!("{:08x}  {}", i * 32, hex.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A short key that groups findings of the same bug: the kind and the detail with numbers
/// and quoted text taken out.
fn signature(f: &Finding) -> String {
    let mut s: String = f.detail.chars().filter(|c| !c.is_ascii_digit()).collect();
    if let Some(i) = s.find(" at ") {
        // panics: keep the location, which names the bug
        if f.kind == "panic" {
            s = s[i..].to_string();
        }
    }
    let head: String = s.chars().take(90).collect();
    format!("{}: {head}", f.kind)
}

struct TargetReport {
    name: &'static str,
    cases: u64,
    findings: u64,
    largest_alloc: usize,
    slowest: Duration,
    slowest_input: Vec<u8>,
    signatures: BTreeMap<String, u64>,
}

struct Run {
    findings_dir: PathBuf,
    deadline_per_target: Duration,
    seed: u64,
    /// Per worker: when its current case began (ms since start; 0 = idle) and its input.
    started: Vec<AtomicU64>,
    inputs: Vec<Mutex<String>>,
    t0: Instant,
}

fn target_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn fuzz_target(run: &Run, worker: usize, target: &dyn Target) -> anyhow::Result<TargetReport> {
    let dir = tempfile::Builder::new()
        .prefix(&format!(
            "whetstone-fuzz-{}-",
            target.name().replace(' ', "-")
        ))
        .tempdir()?;
    let mut rng = mutate::Rng::new(target_seed(run.seed, target.name()));
    let inputs = target.inputs();
    anyhow::ensure!(!inputs.is_empty(), "target {} has no seeds", target.name());
    let mut report = TargetReport {
        name: target.name(),
        cases: 0,
        findings: 0,
        largest_alloc: 0,
        slowest: Duration::ZERO,
        slowest_input: vec![],
        signatures: BTreeMap::new(),
    };
    let start = Instant::now();
    let mut case = 0usize;
    while start.elapsed() < run.deadline_per_target || case < inputs.len() {
        // every seed as it is first, then mutants of a random seed
        let i = if case < inputs.len() {
            case
        } else {
            rng.below(inputs.len())
        };
        let mut bytes = if case < inputs.len() {
            inputs[i].bytes.clone()
        } else {
            target.mutate(&mut rng, i)
        };
        // big inputs only slow the search down (nothing here needs more to go wrong)
        if bytes.len() > MAX_INPUT {
            bytes.truncate(MAX_INPUT);
        }
        case += 1;
        let path = dir.path().join(&inputs[i].file);
        // one case's files only: the folder readers (safetensors) list the folder
        for e in std::fs::read_dir(dir.path())?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        std::fs::write(&path, &bytes)?;
        *run.inputs[worker].lock().unwrap_or_else(|e| e.into_inner()) = path.display().to_string();
        let t = Instant::now();
        run.started[worker].store(run.t0.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        let (findings, largest) = run_case(target, &path, bytes.len());
        let findings: Vec<Finding> = findings
            .into_iter()
            .map(|f| Finding {
                kind: f.kind,
                detail: f.detail.replace(&path.display().to_string(), "<input>"),
            })
            .collect();
        run.started[worker].store(0, Ordering::Relaxed);
        if t.elapsed() > report.slowest {
            report.slowest = t.elapsed();
            report.slowest_input = bytes.clone();
        }
        report.cases += 1;
        report.largest_alloc = report.largest_alloc.max(largest);
        for f in findings {
            report.findings += 1;
            let sig = signature(&f);
            let seen = report.signatures.entry(sig.clone()).or_insert(0);
            *seen += 1;
            if *seen <= 3 {
                save_finding(run, target, &inputs[i].file, &bytes, &f, *seen)?;
                eprintln!(
                    "fuzz: {}: FINDING {} (case {case}): {}",
                    target.name(),
                    f.kind,
                    one_line(&f.detail, 400)
                );
            }
        }
    }
    let slow_dir = run.findings_dir.join("slowest");
    std::fs::create_dir_all(&slow_dir)?;
    std::fs::write(
        slow_dir.join(format!(
            "{}-{}",
            target.name().replace(' ', "-"),
            inputs[0].file
        )),
        &report.slowest_input,
    )?;
    Ok(report)
}

/// Inputs are cut to this size.
const MAX_INPUT: usize = 256 << 10;

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', "\\n");
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

fn save_finding(
    run: &Run,
    target: &dyn Target,
    file: &str,
    bytes: &[u8],
    f: &Finding,
    n: u64,
) -> anyhow::Result<()> {
    let dir = run.findings_dir.join(target.name().replace(' ', "-"));
    std::fs::create_dir_all(&dir)?;
    let stem = format!(
        "{}-{:016x}-{n}",
        f.kind.replace(' ', "-"),
        target_seed(0, &signature(f))
    );
    std::fs::write(dir.join(format!("{stem}-{file}")), bytes)?;
    std::fs::write(
        dir.join(format!("{stem}.txt")),
        format!(
            "target: {}\nkind: {}\ndetail: {}\ninput file name: {file}\ninput ({} bytes):\n{}\n",
            target.name(),
            f.kind,
            f.detail,
            bytes.len(),
            escaped(bytes)
        ),
    )?;
    Ok(())
}

fn replay(targets: &[Box<dyn Target>], file: &Path) -> anyhow::Result<bool> {
    anyhow::ensure!(targets.len() == 1, "--replay needs exactly one --target");
    let target = targets[0].as_ref();
    let bytes = std::fs::read(file)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(&target.inputs()[0].file);
    std::fs::write(&path, &bytes)?;
    let (findings, largest) = run_case(target, &path, bytes.len());
    println!("largest allocation: {largest} bytes");
    for r in target.run(&path) {
        println!("{}: {}", r.reader, r.message);
    }
    for f in &findings {
        println!("FINDING {}: {}", f.kind, f.detail);
    }
    Ok(findings.is_empty())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut all = targets::all();
    if !args.targets.is_empty() {
        let known: Vec<&str> = all.iter().map(|t| t.name()).collect();
        for t in &args.targets {
            anyhow::ensure!(
                known.contains(&t.as_str()),
                "unknown target `{t}` (targets: {})",
                known.join(", ")
            );
        }
        all.retain(|t| args.targets.iter().any(|n| n == t.name()));
    }
    if let Some(file) = &args.replay {
        let clean = replay(&all, file)?;
        std::process::exit(if clean { 0 } else { 1 });
    }
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{payload} at {at}")));
    }));
    let jobs = args.jobs.clamp(1, all.len());
    // each target gets an equal share of the jobs × seconds budget
    let per_target = Duration::from_secs_f64(args.seconds as f64 * jobs as f64 / all.len() as f64);
    std::fs::create_dir_all(&args.findings)?;
    let run = Arc::new(Run {
        findings_dir: args.findings.clone(),
        deadline_per_target: per_target,
        seed: args.seed,
        started: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
        inputs: (0..jobs).map(|_| Mutex::new(String::new())).collect(),
        t0: Instant::now(),
    });
    eprintln!(
        "fuzz: {} targets, {jobs} at a time, {:.0} s each, seed {}; findings go to {}",
        all.len(),
        per_target.as_secs_f64(),
        args.seed,
        args.findings.display()
    );
    {
        // the watchdog: a case that hangs cannot be interrupted, so name it and stop
        let run = run.clone();
        let limit = args.case_timeout * 1000;
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = run.t0.elapsed().as_millis() as u64 + 1;
            for (w, s) in run.started.iter().enumerate() {
                let s = s.load(Ordering::Relaxed);
                if s != 0 && now - s > limit {
                    let input = run.inputs[w].lock().map(|i| i.clone()).unwrap_or_default();
                    eprintln!(
                        "fuzz: FINDING slow case: over {} s on {input} (left there to replay)",
                        limit / 1000
                    );
                    std::process::exit(3);
                }
            }
        });
    }
    let queue: Mutex<Vec<Box<dyn Target>>> = Mutex::new(all.into_iter().rev().collect());
    let reports: Mutex<Vec<TargetReport>> = Mutex::new(vec![]);
    let errors: Mutex<Vec<String>> = Mutex::new(vec![]);
    std::thread::scope(|s| {
        for w in 0..jobs {
            let (queue, reports, errors, run) = (&queue, &reports, &errors, &run);
            std::thread::Builder::new()
                // the main thread's stack size, which the readers run on in the CLI
                .stack_size(8 << 20)
                .spawn_scoped(s, move || loop {
                    let Some(t) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                        break;
                    };
                    match fuzz_target(run, w, t.as_ref()) {
                        Ok(r) => {
                            eprintln!(
                                "fuzz: {}: {} cases, {} findings (largest allocation {} KiB, slowest case {} ms)",
                                r.name,
                                r.cases,
                                r.findings,
                                r.largest_alloc / 1024,
                                r.slowest.as_millis()
                            );
                            if let Ok(mut v) = reports.lock() {
                                v.push(r);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut v) = errors.lock() {
                                v.push(format!("{}: {e}", t.name()));
                            }
                        }
                    }
                })
                .expect("spawn a fuzz worker");
        }
    });
    let reports = reports.into_inner().unwrap_or_default();
    let errors = errors.into_inner().unwrap_or_default();
    let (mut cases, mut findings) = (0, 0);
    for r in &reports {
        println!(
            "fuzz: {}: {} cases, {} findings",
            r.name, r.cases, r.findings
        );
        for (sig, n) in &r.signatures {
            println!("  {n} × {sig}");
        }
        cases += r.cases;
        findings += r.findings;
    }
    println!("fuzz: {cases} cases, {findings} findings");
    for e in &errors {
        eprintln!("fuzz: error: {e}");
    }
    if findings > 0 || !errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
