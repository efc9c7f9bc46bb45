//! Postgres, the production store: several service instances can share one database.

use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{Backend, StoreResult};
use crate::crypto::SecretBox;

#[derive(Clone)]
pub struct PgStore {
    pub(super) cipher: Arc<SecretBox>,
    pub(super) pool: PgPool,
}

impl PgStore {
    /// Claims pass over rows another transaction is claiming instead of waiting for them:
    /// several instances claim side by side.
    pub(super) const SKIP_LOCKED: &str = " for update skip locked";

    pub async fn connect(url: &str, max_connections: u32, cipher: Arc<SecretBox>) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .context("could not connect to Postgres")?;
        Ok(PgStore { pool, cipher })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Backend for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await.context("applying Postgres migrations")?;
        self.backfill_trigger_hashes().await?;
        self.backfill_guance_checkers().await?;
        self.backfill_cluster_ratings().await
    }
}
