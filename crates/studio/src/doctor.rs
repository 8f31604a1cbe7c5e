//! `whetstone doctor`: what this installation is and can do, in one report.
//!
//! The CLI prints it and the desktop window's first panel shows it; both get the very same
//! struct from here.

use crate::demo_model::{self, DemoModelStatus};
use crate::paths::DataDir;
use crate::store::Store;
use serde::Serialize;
use ts_rs::TS;
use whetstone_engine::DeviceInfo;

#[derive(Debug, Clone, Serialize, TS)]
#[ts(export)]
pub struct LibraryVersion {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, TS)]
#[ts(export)]
pub struct DatabaseStatus {
    pub path: String,
    pub ok: bool,
    pub journal_mode: Option<String>,
    #[ts(type = "number | null")]
    pub schema_version: Option<i64>,
    #[ts(type = "number | null")]
    pub models_registered: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, TS)]
#[ts(export)]
pub struct DoctorReport {
    pub version: String,
    pub os: String,
    pub arch: String,
    /// Cargo features compiled into this binary that change what it can do (`cuda`, `metal`;
    /// `gemm-avx512` where the CPU matmuls may take gemm's AVX-512 kernels).
    pub compiled_features: Vec<String>,
    pub libraries: Vec<LibraryVersion>,
    pub devices: Vec<DeviceInfo>,
    pub data_dir: String,
    pub data_dir_error: Option<String>,
    pub database: DatabaseStatus,
    pub demo_model: DemoModelStatus,
}

fn libraries() -> Vec<LibraryVersion> {
    env!("WHETSTONE_LIB_VERSIONS")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(n, v)| LibraryVersion {
            name: n.into(),
            version: v.into(),
        })
        .collect()
}

fn compiled_features() -> Vec<String> {
    let mut f = Vec::new();
    if cfg!(feature = "cuda") {
        f.push("cuda".to_string());
    }
    if cfg!(feature = "metal") {
        f.push("metal".to_string());
    }
    if cfg!(feature = "gemm-avx512") {
        f.push("gemm-avx512".to_string());
    }
    f
}

async fn database_status(dir: &DataDir) -> DatabaseStatus {
    let path = dir.database();
    let mut s = DatabaseStatus {
        path: path.display().to_string(),
        ok: false,
        journal_mode: None,
        schema_version: None,
        models_registered: None,
        error: None,
    };
    let store = match Store::open(&path).await {
        Ok(store) => store,
        Err(e) => {
            s.error = Some(e.to_string());
            return s;
        }
    };
    let facts = async {
        Ok::<_, crate::store::StoreError>((
            store.journal_mode().await?,
            store.schema_version().await?,
            store.model_count().await?,
        ))
    }
    .await;
    match facts {
        Ok((mode, version, models)) => {
            s.ok = true;
            s.journal_mode = Some(mode);
            s.schema_version = Some(version);
            s.models_registered = Some(models);
        }
        Err(e) => s.error = Some(e.to_string()),
    }
    store.close().await;
    s
}

/// Gather the report for the data directory `dir` (created if missing).
pub async fn doctor(dir: &DataDir) -> DoctorReport {
    let data_dir_error = dir.ensure().err().map(|e| e.to_string());
    let database = if data_dir_error.is_none() {
        database_status(dir).await
    } else {
        DatabaseStatus {
            path: dir.database().display().to_string(),
            ok: false,
            journal_mode: None,
            schema_version: None,
            models_registered: None,
            error: data_dir_error.clone(),
        }
    };
    let demo_dir = dir.clone();
    // Hashing ~100 MB takes a moment: keep it off the async workers.
    let demo_model = tokio::task::spawn_blocking(move || demo_model::status(&demo_dir))
        .await
        .unwrap_or_else(|e| panic!("demo model check panicked: {e}"));
    DoctorReport {
        version: crate::APP_VERSION.to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        compiled_features: compiled_features(),
        libraries: libraries(),
        devices: whetstone_engine::detect_devices(),
        data_dir: dir.root().display().to_string(),
        data_dir_error,
        database,
        demo_model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fresh_data_dir_gives_a_complete_report() {
        let tmp = tempfile::tempdir().unwrap();
        let r = doctor(&DataDir::at(tmp.path().join("home"))).await;
        assert_eq!(r.version, crate::APP_VERSION);
        assert!(r.database.ok, "{:?}", r.database.error);
        assert_eq!(r.database.journal_mode.as_deref(), Some("wal"));
        assert!(!r.demo_model.present);
        assert!(
            r.libraries.iter().any(|l| l.name == "candle-core"),
            "{:?}",
            r.libraries
        );
        assert!(!r.devices.is_empty());
    }

    #[tokio::test]
    async fn data_dir_that_is_a_file_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("occupied");
        std::fs::write(&file, b"x").unwrap();
        let r = doctor(&DataDir::at(&file)).await;
        assert!(r.data_dir_error.unwrap().contains("occupied"));
        assert!(!r.database.ok);
    }
}
