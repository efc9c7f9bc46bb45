//! SQLite, the embedded store: one file, one service instance.

use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::{Backend, StoreResult};
use crate::crypto::SecretBox;

#[derive(Clone)]
pub struct SqliteStore {
    pub(super) cipher: Arc<SecretBox>,
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// SQLite has no row locks to skip: its single writer makes each claim atomic anyway.
    pub(super) const SKIP_LOCKED: &str = "";

    /// SQLite has no row locks: its single writer keeps a transaction's rows its own.
    pub(super) const LOCK_ROWS: &str = "";

    pub async fn connect(url: &str, max_connections: u32, cipher: Arc<SecretBox>) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| "invalid SQLite URL".to_string())?
            .create_if_missing(true)
            // WAL lets readers (the API) proceed while a run writes its results.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the data directory {}", dir.display()))?;
            }
        }
        private_files(options.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("could not open the SQLite database")?;
        Ok(SqliteStore { pool, cipher })
    }
}

/// Makes the database file readable by its owner only (0600), creating it so, and tightens
/// the files an earlier release left at the umask's 0644. SQLite gives its `-wal` and `-shm`
/// files the mode of the database file. The file holds sealed credentials, trigger id hashes
/// and CloudTrail samples: nobody else on the machine needs to read it.
#[cfg(unix)]
fn private_files(db: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = db.as_os_str();
    if name.is_empty() || name == ":memory:" || name.to_string_lossy().starts_with("file:") {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)
        .with_context(|| format!("creating the SQLite database {}", db.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = name.to_owned();
        path.push(suffix);
        let path = std::path::PathBuf::from(path);
        match std::fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("making {} private", path.display()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_files(_: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}

#[async_trait]
impl Backend for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await.context("applying SQLite migrations")?;
        self.backfill_guance_checkers().await?;
        super::retemplate::log(self.retemplate_clusters().await.context("re-templating stored clusters")?);
        // After re-templating, which merges clusters but rates none.
        self.backfill_cluster_ratings().await
    }

    async fn close(&self) {
        // TRUNCATE: every frame into the file and the log emptied; closing the last
        // connection then removes it.
        if let Err(e) = sqlx::query("pragma wal_checkpoint(truncate)").execute(&self.pool).await {
            tracing::warn!(error = %e, "could not checkpoint the SQLite write-ahead log; the -wal file holds recent writes");
        }
        self.pool.close().await;
    }

    async fn backup(&self, to: &std::path::Path) -> anyhow::Result<()> {
        let tables: i64 =
            sqlx::query_scalar("select count(*) from sqlite_master where type = 'table'").fetch_one(&self.pool).await?;
        anyhow::ensure!(tables > 0, "the database is empty: is this the service's DATA_DIR or DATABASE_URL?");
        let path = to.to_str().context("the backup's path is not valid UTF-8")?;
        // One read transaction: a consistent snapshot, compacted, written as a new file
        // (SQLite refuses to overwrite one).
        sqlx::query("vacuum into ?").bind(path).execute(&self.pool).await.context("VACUUM INTO")?;
        Ok(())
    }
}
