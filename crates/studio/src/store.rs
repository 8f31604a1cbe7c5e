//! The SQLite store: one file, `whetstone.db`, in WAL mode so a reader (the window) never
//! blocks the writer (a training run), with migrations embedded in the binary.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot open the database: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("{path}: cannot bring the database schema up to date: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("{}: cannot take the lock for opening the database: {message}", path.display())]
    Lock { path: PathBuf, message: String },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Open (creating if needed) the database at `path` and apply pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a crash may lose the last transactions, never corrupts.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // A second client (CLI beside the window) waits for the write lock, not errors.
            .busy_timeout(Duration::from_secs(10));
        // sqlx has no migration lock for SQLite, and switching a new database to WAL needs
        // it to itself: two processes opening a fresh data directory at once would both try.
        // A lock file beside the database serialises opening and migrating (milliseconds).
        let lock_path = path.with_extension("db-open.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .and_then(|f| f.lock().map(|_| f))
            .map_err(|e| StoreError::Lock {
                path: lock_path.clone(),
                message: e.to_string(),
            })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let migrated = MIGRATOR.run(&pool).await;
        drop(lock);
        migrated.map_err(|source| StoreError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The newest migration applied, e.g. `1`.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(v.unwrap_or(0))
    }

    pub async fn model_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM models")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn journal_mode(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_in_wal_mode_with_migrations() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("w.db")).await.unwrap();
        assert_eq!(store.journal_mode().await.unwrap(), "wal");
        assert_eq!(
            store.schema_version().await.unwrap(),
            MIGRATOR.iter().count() as i64
        );
        assert_eq!(store.model_count().await.unwrap(), 0);
        let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(ok, "ok");
    }

    #[tokio::test]
    async fn reopening_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("w.db");
        Store::open(&p).await.unwrap().close().await;
        let again = Store::open(&p).await.unwrap();
        assert_eq!(
            again.schema_version().await.unwrap(),
            MIGRATOR.iter().count() as i64
        );
    }

    #[tokio::test]
    async fn unwritable_location_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("missing-dir/w.db");
        let e = Store::open(&p).await.err().expect("must fail");
        assert!(e.to_string().contains("missing-dir/w.db"), "{e}");
    }
}
