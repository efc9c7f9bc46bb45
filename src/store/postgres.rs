//! Postgres, the production store: several service instances can share one database.

use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

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

    /// Rows a statement will rewrite, locked against another instance doing the same.
    pub(super) const LOCK_ROWS: &str = " for update";

    pub async fn connect(url: &str, max_connections: u32, cipher: Arc<SecretBox>) -> anyhow::Result<Self> {
        // The parser's errors can quote the URL, password included: say only what is wrong.
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a valid postgres:// URL"))?;
        // The pool reports any failure to connect as "pool timed out" after its timeout; one
        // connection made first says why, and where.
        let server = describe(&options);
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Err(_) => anyhow::bail!("could not connect to Postgres {server}: no answer within {CONNECT_TIMEOUT:?}"),
            Ok(Err(e)) => anyhow::bail!("could not connect to Postgres {server}: {}", why(&e, &options)),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .with_context(|| format!("could not connect to Postgres {server}"))?;
        Ok(PgStore { pool, cipher })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `at host:port (database d, user u)`: where the service tried to connect, without the password.
fn describe(options: &PgConnectOptions) -> String {
    let place = match options.get_socket() {
        Some(dir) => format!("through the socket in {}", dir.display()),
        None => format!("at {}:{}", options.get_host(), options.get_port()),
    };
    let user = options.get_username();
    format!("{place} (database {:?}, user {user:?})", options.get_database().unwrap_or(user))
}

/// The cause of a failed connection, in words that say what to fix.
fn why(e: &sqlx::Error, options: &PgConnectOptions) -> String {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: nothing listens there (is Postgres running, on this host and port?)".into()
        }
        sqlx::Error::Io(io) if io.to_string().contains("lookup address") => {
            format!("unknown host {:?} ({io})", options.get_host())
        }
        sqlx::Error::Io(io) => format!("network error: {io}"),
        sqlx::Error::Tls(tls) => format!("TLS failed: {tls}"),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") => format!("authentication failed: wrong password for user {:?}", options.get_username()),
            Some("28000") => format!("authentication refused: {} (see the server's pg_hba.conf)", db.message()),
            Some("3D000") => {
                let database = options.get_database().unwrap_or(options.get_username());
                format!("database {database:?} does not exist (create it, or fix the name in DATABASE_URL)")
            }
            Some("53300") => "the server has no connection slots left (too many connections)".into(),
            _ => db.message().to_string(),
        },
        other => other.to_string(),
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
        super::retemplate::log(self.retemplate_clusters().await.context("re-templating stored clusters")?);
        // After re-templating, which merges clusters but rates none.
        self.backfill_cluster_ratings().await
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn backup(&self, _to: &std::path::Path) -> anyhow::Result<()> {
        anyhow::bail!(
            "a Postgres database is copied with Postgres' own tool, consistent while the service runs: \
             pg_dump --format=custom --file=<file> \"$DATABASE_URL\" (restore with pg_restore --dbname=…)"
        )
    }
}
