//! Sweeps: one model, dataset and method trained under several settings — every
//! combination of a grid, and/or random draws from ranges — as a named group of ordinary
//! runs in the history. The runs share their data split: when `seed` is swept, `split_seed`
//! stays at the base seed, so every run (and a soup of them) is judged on the same
//! held-out records.

use crate::history::{self, RunView};
use crate::paths::DataDir;
use crate::runs::{self, NewRun, RunError};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use whetstone_engine::config::{key_info, KeyKind};
use whetstone_engine::TrainConfig;

/// The most runs one sweep may make (a typo in a grid should not queue a thousand).
pub const MAX_RUNS: usize = 64;

/// One swept key and its values (every combination of the grid's axes runs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ts_rs::TS)]
#[ts(export)]
pub struct GridAxis {
    pub key: String,
    pub values: Vec<String>,
}

/// A numeric key drawn at random between `lo` and `hi` (log-uniformly with `log`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ts_rs::TS)]
#[ts(export)]
pub struct RangeAxis {
    pub key: String,
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
}

/// What a sweep is asked to do; stored with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ts_rs::TS)]
#[ts(export)]
pub struct SweepSpec {
    /// Shown in the history (default: the method and the swept keys).
    pub name: Option<String>,
    pub model: String,
    pub data: String,
    pub method: String,
    /// `key=value` settings every run gets.
    pub sets: Vec<String>,
    pub grid: Vec<GridAxis>,
    /// Random draws from `ranges` per grid point (0 = none).
    pub random: usize,
    pub ranges: Vec<RangeAxis>,
}

/// `KEY=v1,v2,...` (the CLI's `--grid`).
pub fn parse_grid(text: &str) -> Result<GridAxis, String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("--grid {text}: expected KEY=v1,v2,..."))?;
    let values: Vec<String> = v
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect();
    if values.is_empty() {
        return Err(format!("--grid {text}: no values after `=`"));
    }
    Ok(GridAxis {
        key: k.trim().to_string(),
        values,
    })
}

/// `KEY=lo:hi` or `KEY=lo:hi:log` (the CLI's `--range`).
pub fn parse_range(text: &str) -> Result<RangeAxis, String> {
    let bad = || format!("--range {text}: expected KEY=lo:hi or KEY=lo:hi:log");
    let (k, v) = text.split_once('=').ok_or_else(bad)?;
    let parts: Vec<&str> = v.split(':').map(str::trim).collect();
    let log = match parts.get(2) {
        None => false,
        Some(&"log") => true,
        Some(_) => return Err(bad()),
    };
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad());
    }
    let num = |s: &str| {
        s.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("--range {text}: `{s}` is not a number"))
    };
    Ok(RangeAxis {
        key: k.trim().to_string(),
        lo: num(parts[0])?,
        hi: num(parts[1])?,
        log,
    })
}

/// A number with three significant digits, as a setting value (`0.000316`, `12.5`, `300`).
fn short_number(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let digits = 2 - x.abs().log10().floor() as i32;
    if digits <= 0 {
        let unit = 10f64.powi(-digits);
        return format!("{}", (x / unit).round() * unit);
    }
    let s = format!("{x:.prec$}", prec = digits.min(12) as usize);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// splitmix64: the random draws of a sweep repeat exactly for the same base seed.
struct Draws(u64);

impl Draws {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One run a sweep will make: its swept settings and whole config.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct PlannedRun {
    pub settings: BTreeMap<String, String>,
    #[ts(as = "whetstone_engine::TrainConfig")]
    pub config: serde_json::Value,
}

/// The runs of `spec` over the settings `base`, each validated; errors name the key.
pub fn plan(spec: &SweepSpec, base: &TrainConfig) -> Result<Vec<PlannedRun>, String> {
    let info = |key: &str| key_info().find(|k| k.key == key);
    let mut seen: Vec<&str> = vec![];
    for key in spec
        .grid
        .iter()
        .map(|g| g.key.as_str())
        .chain(spec.ranges.iter().map(|r| r.key.as_str()))
    {
        if info(key).is_none() || matches!(key, "device") {
            return Err(format!(
                "`{key}` cannot be swept: it is not a run setting (see `whetstone estimate --help` for the keys)"
            ));
        }
        if seen.contains(&key) {
            return Err(format!("`{key}` is swept twice"));
        }
        if !base.key_applies(key) {
            return Err(format!(
                "`{key}` does nothing for a `{}` run",
                base.method.as_str()
            ));
        }
        seen.push(key);
    }
    for g in &spec.grid {
        if let Some(dup) = g
            .values
            .iter()
            .enumerate()
            .find(|(i, v)| g.values[..*i].contains(v))
        {
            return Err(format!("`{}`: the value {} is listed twice", g.key, dup.1));
        }
    }
    for r in &spec.ranges {
        let kind = info(&r.key).map(|k| k.kind);
        if !matches!(kind, Some(KeyKind::Integer | KeyKind::Number)) {
            return Err(format!("`{}`: only number settings take a range", r.key));
        }
        if r.lo >= r.hi {
            return Err(format!(
                "`{}`: the range {}:{} is empty (lo must be below hi)",
                r.key, r.lo, r.hi
            ));
        }
        if r.log && r.lo <= 0.0 {
            return Err(format!(
                "`{}`: a log range needs lo above 0 (got {})",
                r.key, r.lo
            ));
        }
    }
    match (spec.random, spec.ranges.is_empty()) {
        (0, false) => return Err("--range needs --random N (how many draws)".into()),
        (n, true) if n > 0 => return Err("--random needs at least one --range KEY=lo:hi".into()),
        _ => {}
    }
    let grid_points: usize = spec.grid.iter().map(|g| g.values.len()).product();
    let count = grid_points * spec.random.max(1);
    if count > MAX_RUNS {
        return Err(format!(
            "the sweep would make {count} runs; at most {MAX_RUNS} (fewer values, or fewer draws)"
        ));
    }
    if count < 2 {
        return Err("a sweep needs at least two runs: give a key two or more values".into());
    }
    let mut draws = Draws(base.seed ^ 0x5EED_5EED);
    let mut out = vec![];
    for point in 0..grid_points {
        // the grid's last axis changes fastest
        let mut settings = BTreeMap::new();
        let mut rest = point;
        for g in spec.grid.iter().rev() {
            settings.insert(g.key.clone(), g.values[rest % g.values.len()].clone());
            rest /= g.values.len();
        }
        for _ in 0..spec.random.max(1) {
            let mut s = settings.clone();
            for r in &spec.ranges {
                let u = draws.unit();
                let x = if r.log {
                    (r.lo.ln() + u * (r.hi.ln() - r.lo.ln())).exp()
                } else {
                    r.lo + u * (r.hi - r.lo)
                };
                let v = if info(&r.key).map(|k| k.kind) == Some(KeyKind::Integer) {
                    format!("{}", x.round() as i64)
                } else {
                    short_number(x)
                };
                s.insert(r.key.clone(), v);
            }
            let mut cfg = base.clone();
            for (k, v) in &s {
                cfg.set(k, v).map_err(|e| format!("{k}={v}: {e}"))?;
            }
            if s.contains_key("seed") && base.split_seed.is_none() {
                // every seed holds out the same records
                cfg.split_seed = Some(base.seed);
            }
            out.push(PlannedRun {
                settings: s,
                config: serde_json::to_value(&cfg).map_err(|e| e.to_string())?,
            });
        }
    }
    Ok(out)
}

/// A sweep and its runs, as `sweep --json` and the sweep screen show them.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct SweepView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub spec: SweepSpec,
    /// The swept keys, in the spec's order.
    pub keys: Vec<String>,
    pub runs: Vec<RunView>,
    /// The run with the lowest best eval loss so far.
    pub best: Option<String>,
}

/// One line of the sweep list.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct SweepSummary {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub runs: usize,
    pub finished: usize,
    pub best: Option<String>,
    pub best_eval_loss: Option<f64>,
}

/// The base config of a spec: the method, then its `sets`, on the best device unless named.
pub fn base_config(spec: &SweepSpec) -> Result<TrainConfig, String> {
    runs::build_config(Some(&spec.method), None, &spec.sets)
}

/// Register a sweep and its runs (all `queued`, none started: the caller submits them to a
/// queue). Every run is validated before the first is written; if one still fails, the
/// sweep and the runs made so far are removed.
pub async fn create(store: &Store, dir: &DataDir, spec: &SweepSpec) -> Result<SweepView, RunError> {
    let base = base_config(spec).map_err(RunError::User)?;
    let planned = plan(spec, &base).map_err(RunError::User)?;
    let keys = swept_keys(spec);
    let name = spec
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("{} · {}", base.method.as_str(), keys.join(" × ")));
    let spec_json = serde_json::to_string(spec).map_err(|e| RunError::Internal(e.to_string()))?;
    let mut id = None;
    for _ in 0..20 {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(CAST(substr(id, 7) AS INTEGER)), 0) + 1 FROM sweeps WHERE id LIKE 'sweep-%'",
        )
        .fetch_one(store.pool())
        .await?;
        let candidate = format!("sweep-{n}");
        let inserted =
            sqlx::query("INSERT OR IGNORE INTO sweeps (id, name, spec) VALUES (?, ?, ?)")
                .bind(&candidate)
                .bind(name.trim())
                .bind(&spec_json)
                .execute(store.pool())
                .await?
                .rows_affected();
        if inserted == 1 {
            id = Some(candidate);
            break;
        }
    }
    let id = id.ok_or_else(|| RunError::Internal("cannot allocate a sweep id".into()))?;
    let mut made: Vec<String> = vec![];
    for (i, p) in planned.iter().enumerate() {
        let config: TrainConfig = serde_json::from_value(p.config.clone())
            .map_err(|e| RunError::Internal(e.to_string()))?;
        let made_one = async {
            let run = runs::create(
                store,
                dir,
                NewRun {
                    model: spec.model.clone(),
                    data: spec.data.clone(),
                    config,
                },
            )
            .await?;
            made.push(run.id.clone());
            sqlx::query("UPDATE runs SET sweep_id = ?, settings = ? WHERE id = ?")
                .bind(&id)
                .bind(serde_json::to_string(&p.settings).unwrap_or_default())
                .bind(&run.id)
                .execute(store.pool())
                .await?;
            Ok::<(), RunError>(())
        }
        .await;
        if let Err(e) = made_one {
            for r in &made {
                let _ = history::delete(store, r).await;
            }
            let _ = sqlx::query("DELETE FROM sweeps WHERE id = ?")
                .bind(&id)
                .execute(store.pool())
                .await;
            let what = p
                .settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(match e {
                RunError::User(m) => RunError::User(format!("sweep run {} ({what}): {m}", i + 1)),
                other => other,
            });
        }
    }
    show(store, &id).await
}

fn swept_keys(spec: &SweepSpec) -> Vec<String> {
    spec.grid
        .iter()
        .map(|g| g.key.clone())
        .chain(spec.ranges.iter().map(|r| r.key.clone()))
        .collect()
}

/// The run with the lowest best eval loss.
fn best_of(runs: &[RunView]) -> Option<&RunView> {
    runs.iter()
        .filter(|r| r.best_eval_loss.is_some_and(f64::is_finite))
        .min_by(|a, b| {
            a.best_eval_loss
                .unwrap_or(f64::INFINITY)
                .total_cmp(&b.best_eval_loss.unwrap_or(f64::INFINITY))
        })
}

pub async fn show(store: &Store, id: &str) -> Result<SweepView, RunError> {
    let row: Option<(String, String, String, String)> =
        sqlx::query_as("SELECT id, name, spec, created_at FROM sweeps WHERE id = ?")
            .bind(id)
            .fetch_optional(store.pool())
            .await?;
    let (id, name, spec, created_at) = row
        .ok_or_else(|| RunError::User(format!("no sweep `{id}` (see `whetstone runs sweeps`)")))?;
    let spec: SweepSpec = serde_json::from_str(&spec)
        .map_err(|e| RunError::Internal(format!("sweep {id}: stored spec: {e}")))?;
    let runs: Vec<RunView> = history::list(store)
        .await?
        .into_iter()
        .filter(|r| r.sweep_id.as_deref() == Some(id.as_str()) && r.kind == "train")
        .collect();
    let best = best_of(&runs).map(|r| r.id.clone());
    Ok(SweepView {
        keys: swept_keys(&spec),
        id,
        name,
        created_at,
        spec,
        runs,
        best,
    })
}

pub async fn list(store: &Store) -> Result<Vec<SweepSummary>, RunError> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, name, created_at FROM sweeps ORDER BY CAST(substr(id, 7) AS INTEGER)",
    )
    .fetch_all(store.pool())
    .await?;
    let all = history::list(store).await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, created_at)| {
            let runs: Vec<RunView> = all
                .iter()
                .filter(|r| r.sweep_id.as_deref() == Some(id.as_str()) && r.kind == "train")
                .cloned()
                .collect();
            let best = best_of(&runs);
            SweepSummary {
                best: best.map(|r| r.id.clone()),
                best_eval_loss: best.and_then(|r| r.best_eval_loss),
                runs: runs.len(),
                finished: runs
                    .iter()
                    .filter(|r| {
                        !matches!(r.status, crate::RunState::Queued | crate::RunState::Running)
                    })
                    .count(),
                id,
                name,
                created_at,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(grid: &[&str], random: usize, ranges: &[&str]) -> SweepSpec {
        SweepSpec {
            model: "m".into(),
            data: "d".into(),
            method: "lora".into(),
            sets: vec!["device=cpu".into()],
            grid: grid.iter().map(|g| parse_grid(g).unwrap()).collect(),
            random,
            ranges: ranges.iter().map(|r| parse_range(r).unwrap()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_grid_is_every_combination_last_axis_fastest() {
        let s = spec(&["lr=1e-4,2e-4", "lora.r=4,8,16"], 0, &[]);
        let runs = plan(&s, &base_config(&s).unwrap()).unwrap();
        assert_eq!(runs.len(), 6);
        let pairs: Vec<String> = runs
            .iter()
            .map(|r| format!("{}/{}", r.settings["lr"], r.settings["lora.r"]))
            .collect();
        assert_eq!(
            pairs,
            ["1e-4/4", "1e-4/8", "1e-4/16", "2e-4/4", "2e-4/8", "2e-4/16"]
        );
        assert_eq!(runs[5].config["lora"]["r"], 16);
        assert_eq!(runs[5].config["lr"], 2e-4);
        // seed not swept: the split seed stays unset (it is the seed)
        assert!(runs[0].config["split_seed"].is_null());
    }

    #[test]
    fn a_seed_sweep_keeps_one_eval_split() {
        let s = spec(&["seed=1,2,3"], 0, &[]);
        let runs = plan(&s, &base_config(&s).unwrap()).unwrap();
        let seeds: Vec<_> = runs.iter().map(|r| r.config["seed"].clone()).collect();
        assert_eq!(seeds, [1, 2, 3]);
        assert!(runs.iter().all(|r| r.config["split_seed"] == 42));
    }

    #[test]
    fn random_draws_stay_in_range_repeat_and_round_integers() {
        let s = spec(&[], 5, &["lr=1e-5:1e-3:log", "lora.r=4:32"]);
        let base = base_config(&s).unwrap();
        let a = plan(&s, &base).unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(
            a.iter().map(|r| r.settings.clone()).collect::<Vec<_>>(),
            plan(&s, &base)
                .unwrap()
                .iter()
                .map(|r| r.settings.clone())
                .collect::<Vec<_>>()
        );
        for r in &a {
            let lr: f64 = r.settings["lr"].parse().unwrap();
            assert!((1e-5..=1e-3).contains(&lr), "{lr}");
            let rank: usize = r.settings["lora.r"].parse().unwrap();
            assert!((4..=32).contains(&rank));
        }
    }

    #[test]
    fn bad_sweeps_are_refused_by_name() {
        let base = base_config(&spec(&[], 0, &[])).unwrap();
        let err = |s: SweepSpec| plan(&s, &base).unwrap_err();
        assert!(err(spec(&["nope=1,2"], 0, &[])).contains("`nope` cannot be swept"));
        assert!(err(spec(&["lr=1e-4"], 0, &[])).contains("at least two runs"));
        assert!(err(spec(&["lr=1e-4,abc"], 0, &[])).starts_with("lr=abc: "));
        assert!(err(spec(&["lr=1,2", "lr=3,4"], 0, &[])).contains("swept twice"));
        assert!(err(spec(&["ia3.targets=k_proj,v_proj"], 0, &[])).contains("does nothing"));
        assert!(err(spec(&[], 2, &["lr=0:1:log"])).contains("log range needs lo above 0"));
        assert!(err(spec(&[], 0, &["lr=1e-5:1e-3"])).contains("--random"));
        assert!(err(spec(&[], 2, &["schedule=1:2"])).contains("only number settings"));
        let many =
            "seed=".to_string() + &(0..65).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(err(spec(&[&many], 0, &[])).contains("65 runs"));
        assert!(parse_grid("lr").is_err());
        assert!(parse_range("lr=1:2:lin").is_err());
    }

    #[test]
    fn short_numbers_keep_three_digits() {
        assert_eq!(short_number(0.000316227766), "0.000316");
        assert_eq!(short_number(12.3456), "12.3");
        assert_eq!(short_number(1234.5), "1230");
        assert_eq!(short_number(0.5), "0.5");
    }
}
