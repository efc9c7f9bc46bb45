//! Runs: queued, running and finished, with the read positions of log groups they advance.
//!
//! One active run per inspection is the partial unique index `runs_one_active_idx`; a run's
//! heartbeat tells a live process's run from a dead one's, which the next run may take over.
//! [`RunStore::finish_run`] writes everything a run learned in one transaction: its counters
//! here, and through the other resources' files its clusters and access keys
//! (`clusters.rs`), its events and alerting state (`outbox.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::keyset::Dir::Desc;
use super::keyset::{Order, TimeKey};
use super::sql::{INSERT_CHUNK, map_unique};
use super::{ClusterWrite, NewEvent, PgStore, SqliteStore, StoreError, StoreResult};
use crate::model::cluster::{AccessKeyView, ClusterSummary};
use crate::model::run::{LogGroupOutcome, Run, RunReport, RunRequest, RunStatus, Trigger};

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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogGroupState {
    pub log_group: String,
    pub watermark: Option<DateTime<Utc>>,
    pub baseline_until: Option<DateTime<Utc>>,
    /// Default windows in a row that held no record at all, and when a run last warned of
    /// it. Written whole with the rest of the state.
    pub empty_windows: i64,
    pub empty_warned_at: Option<DateTime<Utc>>,
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
    pub warned_records: i64,
    pub insight_events: i64,
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
pub trait RunStore: Send + Sync {
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
    /// Marks the active runs whose owner starts with `owner_prefix` as interrupted, with
    /// `reason` as their error. Used by an instance for its own runs: at start-up (runs a
    /// previous process of the same instance left behind) and when shutdown outlasts its grace.
    async fn interrupt_owned_runs(&self, owner_prefix: &str, now: DateTime<Utc>, reason: &str) -> StoreResult<u64>;
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
    /// Every enabled inspection with when its newest successful run finished (None: it has
    /// none), for the metric "no successful run for N hours" is alerted on.
    async fn last_successes(&self) -> StoreResult<Vec<(Uuid, Option<DateTime<Utc>>)>>;
}

/// The columns of a run up to its report; the two lists below add the report or not.
macro_rules! run_columns_head {
    () => {
        "id, inspection_id, status, trigger, dry_run, explicit_window, request, \
         window_start, window_end, skipped_start, skipped_end, created_at, started_at, finished_at, \
         records_scanned, error_records, malformed_records, ignored_records, clusters_total, clusters_new, \
         new_error_records, baseline_clusters, aws_api_calls, log_groups, error, warned_records, insight_events"
    };
}

const RUN_COLUMNS: &str = concat!(run_columns_head!(), ", report, trace_id");

/// [`RUN_COLUMNS`] for lists: each run without its report. A report is several kilobytes
/// of JSON (keys, new clusters), so a page of 50 runs with reports is a quarter megabyte to
/// read, decode, encode and compress per request; the report is one `GET /runs/{id}` away.
/// `case when false` keeps the column's type (jsonb on Postgres) for the decoder.
const RUN_LIST_COLUMNS: &str = concat!(run_columns_head!(), ", case when false then report end as report, trace_id");

const RUN_ORDER: Order = Order(&[("created_at", Desc), ("id", Desc)]);

/// The error of a run whose process died under it.
const STOPPED_MID_RUN: &str =
    "the service stopped while this run was in progress; its window is read again by the next run";

pub(super) fn parse_status(s: &str) -> Result<RunStatus, StoreError> {
    RunStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown run status {s:?}")))
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    inspection_id: Uuid,
    status: String,
    trigger: String,
    dry_run: bool,
    explicit_window: bool,
    request: Json<RunRequest>,
    window_start: Option<DateTime<Utc>>,
    window_end: Option<DateTime<Utc>>,
    skipped_start: Option<DateTime<Utc>>,
    skipped_end: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    records_scanned: i64,
    error_records: i64,
    malformed_records: i64,
    ignored_records: i64,
    clusters_total: i64,
    clusters_new: i64,
    new_error_records: i64,
    baseline_clusters: i64,
    aws_api_calls: i64,
    log_groups: Json<Vec<LogGroupOutcome>>,
    error: Option<String>,
    report: Option<Json<RunReport>>,
    trace_id: Option<String>,
    warned_records: i64,
    insight_events: i64,
}

impl RunRow {
    fn into_model(self) -> Result<Run, StoreError> {
        Ok(Run {
            id: self.id,
            inspection_id: self.inspection_id,
            status: parse_status(&self.status)?,
            trigger: Trigger::parse(&self.trigger)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown trigger {:?}", self.trigger)))?,
            dry_run: self.dry_run,
            explicit_window: self.explicit_window,
            window_start: self.window_start,
            window_end: self.window_end,
            skipped_start: self.skipped_start,
            skipped_end: self.skipped_end,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            records_scanned: self.records_scanned,
            error_records: self.error_records,
            malformed_records: self.malformed_records,
            ignored_records: self.ignored_records,
            warned_records: self.warned_records,
            insight_events: self.insight_events,
            clusters_total: self.clusters_total,
            clusters_new: self.clusters_new,
            new_error_records: self.new_error_records,
            baseline_clusters: self.baseline_clusters,
            aws_api_calls: self.aws_api_calls,
            log_groups: self.log_groups.0,
            error: self.error,
            report: self.report.map(|r| r.0),
            request: self.request.0,
            trace_id: self.trace_id,
        })
    }
}

/// A new run's log groups, each pending.
fn pending_log_groups(run: &NewRun) -> Vec<LogGroupOutcome> {
    run.log_groups
        .iter()
        .map(|g| LogGroupOutcome {
            name: g.clone(),
            status: "pending".into(),
            records_scanned: 0,
            error_records: 0,
            window_start: None,
            baseline_read: false,
            error: None,
            warnings: Vec::new(),
        })
        .collect()
}

/// [`RunStore`] for a store over one sqlx backend.
macro_rules! run_store {
    ($store:ident, $db:ty) => {
        #[async_trait]
        impl RunStore for $store {
            async fn queue_run(
                &self,
                run: &NewRun,
                stale_before: DateTime<Utc>,
            ) -> StoreResult<Result<Run, QueueRefused>> {
                // Two attempts: the second after declaring a dead process's run interrupted.
                for attempt in 0..2 {
                    match self.insert_run(run).await {
                        Ok(true) => {
                            let created = self
                                .get_run(run.id)
                                .await?
                                .ok_or_else(|| StoreError::Corrupt("run vanished after insert".into()))?;
                            return Ok(Ok(created));
                        }
                        Ok(false) => return Ok(Err(QueueRefused::InspectionMissing)),
                        Err(StoreError::Conflict("runs_one_active_idx")) => {
                            let active: Option<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
                                "select id, heartbeat_at from runs where inspection_id = $1 \
                                 and status in ('queued', 'running')",
                            )
                            .bind(run.inspection_id)
                            .fetch_optional(&self.pool)
                            .await?;
                            let Some((active_id, heartbeat)) = active else {
                                continue; // it finished meanwhile
                            };
                            let stale = heartbeat.is_none_or(|h| h < stale_before);
                            if !stale || attempt == 1 {
                                return Ok(Err(QueueRefused::Active { run_id: active_id }));
                            }
                            self.interrupt(active_id, run.created_at).await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(StoreError::Corrupt("could not queue the run".into()))
            }

            async fn start_run(
                &self,
                run_id: Uuid,
                window: (DateTime<Utc>, DateTime<Utc>),
                skipped: Option<(DateTime<Utc>, DateTime<Utc>)>,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update runs set status = 'running', started_at = $2, heartbeat_at = $2, window_start = $3, \
                     window_end = $4, skipped_start = $5, skipped_end = $6 where id = $1 and status = 'queued'",
                )
                .bind(run_id)
                .bind(now)
                .bind(window.0)
                .bind(window.1)
                .bind(skipped.map(|s| s.0))
                .bind(skipped.map(|s| s.1))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn heartbeat(&self, run_ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<()> {
                for chunk in run_ids.chunks(INSERT_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("update runs set heartbeat_at = ");
                    qb.push_bind(now).push(" where status in ('queued', 'running') and id in (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(")");
                    qb.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn interrupt_stale_runs(&self, stale_before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query(
                    "update runs set status = 'interrupted', finished_at = $2, error = $3 \
                     where status in ('queued', 'running') and (heartbeat_at is null or heartbeat_at < $1)",
                )
                .bind(stale_before)
                .bind(now)
                .bind(STOPPED_MID_RUN)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn interrupt_owned_runs(
                &self,
                owner_prefix: &str,
                now: DateTime<Utc>,
                reason: &str,
            ) -> StoreResult<u64> {
                let done = sqlx::query(
                    "update runs set status = 'interrupted', finished_at = $2, error = $3 \
                     where status in ('queued', 'running') and substr(owner, 1, $4) = $1",
                )
                .bind(owner_prefix)
                .bind(now)
                .bind(reason)
                .bind(owner_prefix.chars().count() as i32)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn log_group_states(&self, inspection_id: Uuid) -> StoreResult<Vec<LogGroupState>> {
                type Row = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>, i64, Option<DateTime<Utc>>);
                let rows: Vec<Row> = sqlx::query_as(
                    "select log_group, watermark, baseline_until, empty_windows, empty_warned_at \
                     from log_group_state where inspection_id = $1",
                )
                .bind(inspection_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(log_group, watermark, baseline_until, empty_windows, empty_warned_at)| LogGroupState {
                        log_group,
                        watermark,
                        baseline_until,
                        empty_windows,
                        empty_warned_at,
                    })
                    .collect())
            }

            async fn finish_run(&self, run: &FinishedRun) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                if !Self::close_run(&mut tx, run).await? {
                    // Someone declared this run dead; what it learned must not be half-applied
                    // next to whichever run followed.
                    return Ok(false);
                }
                Self::write_clusters(&mut tx, run).await?;
                Self::write_run_clusters(&mut tx, run).await?;
                Self::write_access_keys(&mut tx, run).await?;
                Self::write_group_states(&mut tx, run).await?;
                Self::write_dimensions(&mut tx, run).await?;
                Self::write_events(&mut tx, run).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn fail_run(
                &self,
                run_id: Uuid,
                status: RunStatus,
                error: &str,
                log_groups: &[LogGroupOutcome],
                now: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "update runs set status = $2, error = $3, log_groups = $4, finished_at = $5 \
                     where id = $1 and status in ('queued', 'running')",
                )
                .bind(run_id)
                .bind(status.as_str())
                .bind(error)
                .bind(Json(log_groups))
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_run(&self, id: Uuid) -> StoreResult<Option<Run>> {
                let sql = format!("select {RUN_COLUMNS} from runs where id = $1");
                let row = sqlx::query_as::<$db, RunRow>(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.map(RunRow::into_model).transpose()
            }

            async fn list_runs(&self, filter: &RunFilter, after: Option<TimeKey>, limit: i64) -> StoreResult<Vec<Run>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!("select {RUN_LIST_COLUMNS} from runs where 1 = 1"));
                if let Some(id) = filter.inspection_id {
                    qb.push(" and inspection_id = ").push_bind(id);
                }
                if let Some(status) = filter.status {
                    qb.push(" and status = ").push_bind(status.as_str());
                }
                if let Some(since) = filter.since {
                    qb.push(" and created_at >= ").push_bind(since);
                }
                if let Some(until) = filter.until {
                    qb.push(" and created_at < ").push_bind(until);
                }
                RUN_ORDER.push_page(&mut qb, after, limit);
                let rows = qb.build_query_as::<RunRow>().fetch_all(&self.pool).await?;
                rows.into_iter().map(RunRow::into_model).collect()
            }

            async fn active_run_count(&self) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as("select count(*) from runs where status in ('queued', 'running')")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn last_successes(&self) -> StoreResult<Vec<(Uuid, Option<DateTime<Utc>>)>> {
                // Newest created first along runs_inspection_created_idx, stopping at the
                // first success: a scrape reads about one run per inspection, not the history.
                let rows = sqlx::query_as(
                    "select i.id, (select r.finished_at from runs r \
                         where r.inspection_id = i.id and r.status = 'succeeded' \
                         order by r.created_at desc, r.id desc limit 1) \
                     from inspections i where i.enabled order by i.id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }
        }

        impl $store {
            /// Inserts a queued run and makes it its inspection's last. False when the
            /// inspection is gone; a conflict when one of its runs is active.
            async fn insert_run(&self, run: &NewRun) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "insert into runs (id, inspection_id, status, trigger, trace_id, dry_run, explicit_window, \
                     request, created_at, heartbeat_at, log_groups, owner) \
                     select $1, id, 'queued', $2, $3, $4, $5, $6, $7, $7, $8, $9 from inspections where id = $10",
                )
                .bind(run.id)
                .bind(run.trigger.as_str())
                .bind(&run.trace_id)
                .bind(run.request.dry_run)
                .bind(run.request.window_start.is_some())
                .bind(Json(&run.request))
                .bind(run.created_at)
                .bind(Json(pending_log_groups(run)))
                .bind(&run.owner)
                .bind(run.inspection_id)
                .execute(&mut *tx)
                .await
                .map_err(map_unique)?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query("update inspections set last_run_id = $1 where id = $2")
                    .bind(run.id)
                    .bind(run.inspection_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn interrupt(&self, run_id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query(
                    "update runs set status = 'interrupted', finished_at = $2, error = $3 \
                     where id = $1 and status in ('queued', 'running')",
                )
                .bind(run_id)
                .bind(now)
                .bind(STOPPED_MID_RUN)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            /// Writes a finished run's counters and report. False when the run is no longer
            /// active.
            async fn close_run(conn: &mut <$db as sqlx::Database>::Connection, run: &FinishedRun) -> StoreResult<bool> {
                let clusters_new = run.run_clusters.iter().filter(|c| c.is_new).count() as i64;
                let done = sqlx::query(
                    "update runs set status = $2, window_start = $3, window_end = $4, skipped_start = $5, \
                     skipped_end = $6, finished_at = $7, records_scanned = $8, error_records = $9, \
                     malformed_records = $10, ignored_records = $11, clusters_total = $12, clusters_new = $13, \
                     new_error_records = $14, baseline_clusters = $15, aws_api_calls = $16, log_groups = $17, \
                     error = $18, report = $19, heartbeat_at = $7, warned_records = $20, insight_events = $21 \
                     where id = $1 and status in ('queued', 'running')",
                )
                .bind(run.run_id)
                .bind(run.status.as_str())
                .bind(run.window_start)
                .bind(run.window_end)
                .bind(run.skipped.map(|s| s.0))
                .bind(run.skipped.map(|s| s.1))
                .bind(run.finished_at)
                .bind(run.records_scanned)
                .bind(run.error_records)
                .bind(run.malformed_records)
                .bind(run.ignored_records)
                .bind(run.run_clusters.len() as i64)
                .bind(clusters_new)
                .bind(run.new_error_records)
                .bind(run.baseline_clusters)
                .bind(run.aws_api_calls)
                .bind(Json(&run.log_groups))
                .bind(&run.error)
                .bind(run.report.as_ref().map(Json))
                .bind(run.warned_records)
                .bind(run.insight_events)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            /// Where the run's log groups were read up to. A group whose position the run did
            /// not move keeps the one it had.
            async fn write_group_states(
                conn: &mut <$db as sqlx::Database>::Connection,
                run: &FinishedRun,
            ) -> StoreResult<()> {
                for state in &run.group_states {
                    sqlx::query(
                        "insert into log_group_state (inspection_id, log_group, watermark, baseline_until, updated_at, \
                         empty_windows, empty_warned_at) \
                         values ($1, $2, $3, $4, $5, $6, $7) \
                         on conflict (inspection_id, log_group) do update set \
                         watermark = coalesce(excluded.watermark, log_group_state.watermark), \
                         baseline_until = coalesce(excluded.baseline_until, log_group_state.baseline_until), \
                         updated_at = excluded.updated_at, \
                         empty_windows = excluded.empty_windows, \
                         empty_warned_at = excluded.empty_warned_at",
                    )
                    .bind(run.inspection_id)
                    .bind(&state.log_group)
                    .bind(state.watermark)
                    .bind(state.baseline_until)
                    .bind(run.finished_at)
                    .bind(state.empty_windows)
                    .bind(state.empty_warned_at)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }
        }
    };
}

run_store!(PgStore, sqlx::Postgres);
run_store!(SqliteStore, sqlx::Sqlite);
