//! The database: inspections, runs, clusters, access-key activity, events and schedule slots.
//!
//! The service asks its database for one thing at a time through [`Store`], which is the sum
//! of one small trait per resource. Callers hold a [`DynStore`] and call the resource
//! traits' methods on it directly (`store.get_run(id)`): methods of a trait object's
//! supertraits need no import. Each trait is implemented once, in portable SQL, for both
//! backends: Postgres, which several instances can share, and SQLite, one file for one
//! instance. Both behave the same and one test suite runs on both. Invariants that matter
//! across instances live in the schema, not in memory: one active run per inspection is a
//! partial unique index, a cluster's identity a unique key, a schedule slot a primary key.
//!
//! # Layout
//!
//! One file per resource, each with its types, its trait, its rows and its SQL:
//!
//! - `inspections.rs`: [`InspectionStore`]: inspections, their sealed credentials and
//!   trigger ids, and the backfills [`Backend::migrate`] runs after the migrations.
//! - `runs.rs`: [`RunStore`]: queueing, starting, heartbeats, interrupting and finishing
//!   runs, and the read positions of log groups (watermarks) that finished runs advance.
//!   [`RunStore::finish_run`] opens the one transaction of a finished run and has each
//!   resource below write its part in it.
//! - `clusters.rs`: [`ClusterStore`]: known clusters, a run's clusters and access keys, and
//!   the backfill that rates clusters stored before their level and CIS rules were.
//! - `outbox.rs`: [`OutboxStore`]: events and their delivery, the alerting state per cloud
//!   account, and inspections' registrations in Guance.
//! - `schedule.rs`: [`ScheduleStore`]: claimed cron slots.
//! - `retemplate.rs`: clusters made by older template rules brought to the current ones,
//!   which [`Backend::migrate`] does after the backfills.
//!
//! And what they share:
//!
//! - `keyset.rs`: keyset pagination: the API's cursors and the SQL clause that resumes a
//!   list after one, written once for every list.
//! - `sql.rs`: the rules of portable SQL, and the few helpers the resources share.
//! - `postgres.rs`, `sqlite.rs`: the two store types: connecting, migrations and
//!   [`Backend`], the only code that differs between backends.
//!
//! # One SQL for two backends
//!
//! sqlx types a statement by its backend, so the same SQL must be compiled once per
//! backend. Each resource file does that with a small `macro_rules!` whose body is the
//! trait's implementation, invoked at the end of the file for [`PgStore`] and
//! [`SqliteStore`]; invoked where it is defined, the body names types through the file's
//! imports. Code that does not run a statement (rows, decoding, the keyset clause) is plain
//! code outside the macros. Generic code over `sqlx::Database` was the alternative, but
//! every function would have to restate that each type it binds or reads is `Encode`,
//! `Decode` and `Type` for the backend (a trait's `where` clauses are not implied where the
//! trait is used); `keyset.rs` does it once, for the five types of sort-key values.

mod clusters;
mod inspections;
mod keyset;
mod outbox;
mod postgres;
mod retemplate;
mod runs;
mod schedule;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::SecretBox;

pub use clusters::{ClusterFilter, ClusterOccurrence, ClusterStore, ClusterWrite, KnownCluster};
pub use inspections::{InspectionFilter, InspectionStore};
pub use keyset::{AccessKeyKey, RunClusterKey, TimeKey, decode_cursor, encode_cursor};
pub use outbox::{CheckerJob, CheckerOutcome, DeliveryOutcome, EventFilter, NewEvent, OutboxEvent, OutboxStore};
pub use postgres::PgStore;
pub use runs::{FinishedRun, LogGroupState, NewRun, QueueRefused, RunFilter, RunStore};
pub use schedule::{ScheduleSlot, ScheduleStore, SlotOutcome};
pub use sqlite::SqliteStore;

/// Everything the service asks of its database: each resource's trait, and the database
/// itself. Implemented for every type that implements them all.
pub trait Store:
    Backend + InspectionStore + RunStore + ClusterStore + OutboxStore + ScheduleStore + Send + Sync + 'static
{
}

impl<T> Store for T where
    T: Backend + InspectionStore + RunStore + ClusterStore + OutboxStore + ScheduleStore + Send + Sync + 'static
{
}

pub type DynStore = Arc<dyn Store>;

/// The database itself rather than what it holds: which one it is, whether it answers,
/// and bringing its schema up to date.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;
    /// Applies the migrations this build embeds, then fills in what SQL alone could not.
    async fn migrate(&self) -> anyhow::Result<()>;
    /// Leaves the database complete in its own files and closes the connections. SQLite
    /// keeps recent writes in `<file>-wal` until a checkpoint moves them into the file: a
    /// copy of the `.db` alone, taken after a scan or a stop, must hold everything.
    async fn close(&self);
    /// Writes a consistent copy of the whole database to `to` (a new file), while the
    /// service may go on using it.
    async fn backup(&self, to: &std::path::Path) -> anyhow::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; the name says which.
    #[error("conflict on {0}")]
    Conflict(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the database could not be reached (as opposed to refusing a statement).
    ///
    /// A Postgres restart shows up in several ways: refused connections (the pool waits, then
    /// `PoolTimedOut`), sockets cut mid-statement (`Io`, `Protocol`), and server errors on
    /// the connections it is closing: SQLSTATE class 57P ("terminating connection due to
    /// administrator command", "the database system is starting up"), class 08 (connection
    /// exceptions) and 53 (too many connections, out of resources). SQLite's `BUSY`/`LOCKED`
    /// after the busy timeout are the same kind of trouble: try again shortly.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            StoreError::Database(sqlx::Error::Database(e)) => {
                let code = e.code().unwrap_or_default();
                if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // The primary result code is the low byte of the extended one.
                    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
                } else {
                    code.starts_with("57P") || code.starts_with("08") || code.starts_with("53")
                }
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the store a URL names: `postgres://…` or `sqlite://…`. Credentials are sealed and
/// opened with `cipher`.
pub async fn connect(url: &str, max_connections: u32, cipher: Arc<SecretBox>) -> anyhow::Result<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, max_connections, cipher).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, max_connections, cipher).await?))
    } else {
        anyhow::bail!("unsupported database URL: it must start with postgres:// or sqlite:")
    }
}
