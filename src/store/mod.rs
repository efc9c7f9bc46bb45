//! The database: inspections, runs, clusters, access-key activity and read positions.
//!
//! [`Store`] is implemented once, in portable SQL (`sql.rs`), and instantiated for Postgres
//! and SQLite, so both backends behave the same and are tested with one suite. Invariants
//! that matter across several service instances live in the schema, not in memory: one
//! active run per inspection is a partial unique index, a cluster's identity a unique key.

mod clusters;
mod inspections;
mod keyset;
mod outbox;
mod postgres;
mod schedule;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::crypto::SecretBox;
use crate::model::cluster::{AccessKeyView, ClusterSummary};
use crate::model::run::{LogGroupOutcome, Run, RunReport, RunRequest, RunStatus, Trigger};

pub use clusters::{ClusterFilter, ClusterStore, ClusterWrite, KnownCluster};
pub use inspections::{InspectionFilter, InspectionStore};
pub use keyset::{AccessKeyKey, RunClusterKey, TimeKey, decode_cursor, encode_cursor};
pub use outbox::{CheckerJob, CheckerOutcome, DeliveryOutcome, NewEvent, OutboxEvent, OutboxStore};
pub use postgres::PgStore;
pub use schedule::{ScheduleSlot, ScheduleStore, SlotOutcome};
pub use sqlite::SqliteStore;

pub type DynStore = Arc<dyn Store>;

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

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub inspection_id: Option<Uuid>,
    pub status: Option<RunStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A run to be queued.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: Uuid,
    pub inspection_id: Uuid,
    pub trigger: Trigger,
    pub trace_id: Option<String>,
    pub request: RunRequest,
    pub log_groups: Vec<String>,
    pub owner: String,
    pub created_at: DateTime<Utc>,
}

/// Why a run could not be queued.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueRefused {
    /// Another run of the inspection is queued or running.
    Active {
        run_id: Uuid,
    },
    InspectionMissing,
}

/// Where a log group was read up to.
#[derive(Debug, Clone, PartialEq)]
pub struct LogGroupState {
    pub log_group: String,
    pub watermark: Option<DateTime<Utc>>,
    pub baseline_until: Option<DateTime<Utc>>,
}

/// Everything a finished run writes, in one transaction.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub run_id: Uuid,
    pub inspection_id: Uuid,
    pub status: RunStatus,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    pub skipped: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub finished_at: DateTime<Utc>,
    pub records_scanned: i64,
    pub error_records: i64,
    pub malformed_records: i64,
    pub ignored_records: i64,
    pub new_error_records: i64,
    pub baseline_clusters: i64,
    pub aws_api_calls: i64,
    pub log_groups: Vec<LogGroupOutcome>,
    pub error: Option<String>,
    pub report: Option<RunReport>,
    /// The run's clusters (the window's, not the baseline's).
    pub run_clusters: Vec<ClusterSummary>,
    /// Known-cluster rows to insert or merge (empty for a dry run).
    pub cluster_writes: Vec<ClusterWrite>,
    /// Access-key activity seen by the run (`total_events`: the run's events of the key).
    pub key_writes: Vec<AccessKeyView>,
    /// New read positions of log groups (empty for dry runs and explicit windows).
    pub group_states: Vec<LogGroupState>,
    /// The run's Guance events (the outbox): written with the run, delivered afterwards.
    pub events: Vec<NewEvent>,
    /// New alerting state per cloud account (JSON of `guance::alerting::DimensionState`).
    pub dimensions: Vec<(String, serde_json::Value)>,
}

#[async_trait]
pub trait Store: ClusterStore + InspectionStore + OutboxStore + ScheduleStore + Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;
    async fn migrate(&self) -> anyhow::Result<()>;

    /// Queues a run unless one of the inspection is active. An active run whose heartbeat is
    /// older than `stale_before` belonged to a dead process: it is marked interrupted first.
    async fn queue_run(&self, run: &NewRun, stale_before: DateTime<Utc>) -> StoreResult<Result<Run, QueueRefused>>;
    async fn start_run(
        &self,
        run_id: Uuid,
        window: (DateTime<Utc>, DateTime<Utc>),
        skipped: Option<(DateTime<Utc>, DateTime<Utc>)>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn heartbeat(&self, run_ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<()>;
    /// Marks active runs whose heartbeat is older than `stale_before` as interrupted.
    async fn interrupt_stale_runs(&self, stale_before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64>;
    async fn log_group_states(&self, inspection_id: Uuid) -> StoreResult<Vec<LogGroupState>>;
    /// Writes a finished run and all it learned in one transaction. False when the run was
    /// no longer active (another process declared it interrupted): nothing is written then.
    async fn finish_run(&self, run: &FinishedRun) -> StoreResult<bool>;
    /// Records a run that ended without results (the writes of `finish_run` failed or the run
    /// could not start).
    async fn fail_run(
        &self,
        run_id: Uuid,
        status: RunStatus,
        error: &str,
        log_groups: &[LogGroupOutcome],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn get_run(&self, id: Uuid) -> StoreResult<Option<Run>>;
    /// Up to `limit` runs after `after`, newest first.
    async fn list_runs(&self, filter: &RunFilter, after: Option<TimeKey>, limit: i64) -> StoreResult<Vec<Run>>;
    /// Runs queued or running, of every instance (for metrics).
    async fn active_run_count(&self) -> StoreResult<i64>;
    /// Marks the active runs whose owner starts with `owner_prefix` as interrupted, with
    /// `reason` as their error. Used by an instance for its own runs: at start-up (runs a
    /// previous process of the same instance left behind) and when shutdown outlasts its grace.
    async fn interrupt_owned_runs(&self, owner_prefix: &str, now: DateTime<Utc>, reason: &str) -> StoreResult<u64>;
}
