//! Postgres, the production store: several service instances can share one database.

use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::sql::sql_store;
use crate::crypto::SecretBox;

#[derive(Clone)]
pub struct PgStore {
    pub(super) cipher: Arc<SecretBox>,
    pub(super) pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32, cipher: Arc<SecretBox>) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .context("could not connect to Postgres")?;
        Ok(PgStore { pool, cipher })
    }

    /// Claims pass over rows another transaction is claiming instead of waiting for them:
    /// several instances claim side by side.
    pub(super) const SKIP_LOCKED: &str = " for update skip locked";

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn run_migrations(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await.context("applying Postgres migrations")
    }
}

sql_store!(PgStore, sqlx::Postgres, "postgres");
