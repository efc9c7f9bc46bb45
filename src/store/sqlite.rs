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
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("could not open the SQLite database")?;
        Ok(SqliteStore { pool, cipher })
    }
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
        self.backfill_trigger_hashes().await?;
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
