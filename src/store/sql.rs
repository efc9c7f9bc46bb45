//! The portable SQL behind [`Store`](super::Store), written once and instantiated per backend
//! by [`sql_store!`].
//!
//! Portable means: `$n` placeholders (SQLite reads them positionally too), row-value keyset
//! comparisons, `on conflict … do update`, `case` instead of `least`/`greatest`, timestamps
//! and JSON bound from Rust rather than computed by the database.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::model::run::{LogGroupOutcome, Run, RunReport, RunRequest, RunStatus, Trigger};

use super::StoreError;
use super::keyset::Dir::Desc;
use super::keyset::Order;

/// The columns of a run up to its report; the two lists below add the report or not.
macro_rules! run_columns_head {
    () => {
        "id, inspection_id, status, trigger, dry_run, explicit_window, request, \
         window_start, window_end, skipped_start, skipped_end, created_at, started_at, finished_at, \
         records_scanned, error_records, malformed_records, ignored_records, clusters_total, clusters_new, \
         new_error_records, baseline_clusters, aws_api_calls, log_groups, error"
    };
}

pub(super) const RUN_COLUMNS: &str = concat!(run_columns_head!(), ", report, trace_id");

/// [`RUN_COLUMNS`] for lists: each run without its report. A report is several kilobytes
/// of JSON (keys, new clusters), so a page of 50 runs with reports is a quarter megabyte to
/// read, decode, encode and compress per request; the report is one `GET /runs/{id}` away.
/// `case when false` keeps the column's type (jsonb on Postgres) for the decoder.
pub(super) const RUN_LIST_COLUMNS: &str =
    concat!(run_columns_head!(), ", case when false then report end as report, trace_id");

/// The orders of the paginated lists (see [`super::keyset`]): oldest inspections first,
/// newest of the rest first, a run's new and large clusters first.
pub(super) const RUN_ORDER: Order = Order(&[("created_at", Desc), ("id", Desc)]);

/// Rows per multi-row insert: well under both backends' limits on bound parameters.
pub(super) const INSERT_CHUNK: usize = 400;

pub(super) fn parse_status(s: &str) -> Result<RunStatus, StoreError> {
    RunStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown run status {s:?}")))
}

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
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
}

impl RunRow {
    pub(super) fn into_model(self) -> Result<Run, StoreError> {
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

/// Maps a unique violation to the constraint it hit, whatever the backend's wording.
pub(super) fn map_unique(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            let msg = db.message();
            let constraint = db.constraint().unwrap_or("");
            if constraint == "inspections_name_key" || msg.contains("inspections.name") {
                return StoreError::Conflict("inspections_name_key");
            }
            if constraint == "runs_one_active_idx" || msg.contains("runs.inspection_id") {
                return StoreError::Conflict("runs_one_active_idx");
            }
        }
    }
    StoreError::Database(e)
}

/// Implements [`Store`](super::Store) for a pool-holding struct over one sqlx backend.
macro_rules! sql_store {
    ($store:ty, $db:ty, $backend:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("select 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn migrate(&self) -> anyhow::Result<()> {
                self.run_migrations().await?;
                self.backfill_trigger_hashes().await?;
                self.backfill_guance_checkers().await
            }

            async fn queue_run(
                &self,
                run: &$crate::store::NewRun,
                stale_before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<Result<$crate::model::run::Run, $crate::store::QueueRefused>> {
                let groups: Vec<$crate::model::run::LogGroupOutcome> = run
                    .log_groups
                    .iter()
                    .map(|g| $crate::model::run::LogGroupOutcome {
                        name: g.clone(),
                        status: "pending".into(),
                        records_scanned: 0,
                        error_records: 0,
                        window_start: None,
                        baseline_read: false,
                        error: None,
                        warnings: Vec::new(),
                    })
                    .collect();
                // Two attempts: the second after declaring a dead process's run interrupted.
                for attempt in 0..2 {
                    let mut tx = self.pool.begin().await?;
                    let inserted = sqlx::query(
                        "insert into runs (id, inspection_id, status, trigger, trace_id, dry_run, explicit_window, \
                         request, created_at, heartbeat_at, log_groups, owner) \
                         select $1, id, 'queued', $2, $3, $4, $5, $6, $7, $7, $8, $9 from inspections where id = $10",
                    )
                    .bind(run.id)
                    .bind(run.trigger.as_str())
                    .bind(&run.trace_id)
                    .bind(run.request.dry_run)
                    .bind(run.request.window_start.is_some())
                    .bind(sqlx::types::Json(&run.request))
                    .bind(run.created_at)
                    .bind(sqlx::types::Json(&groups))
                    .bind(&run.owner)
                    .bind(run.inspection_id)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::sql::map_unique);
                    match inserted {
                        Ok(done) if done.rows_affected() == 0 => {
                            return Ok(Err($crate::store::QueueRefused::InspectionMissing));
                        }
                        Ok(_) => {
                            sqlx::query("update inspections set last_run_id = $1 where id = $2")
                                .bind(run.id)
                                .bind(run.inspection_id)
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await?;
                            let created = self.get_run(run.id).await?.ok_or_else(|| {
                                $crate::store::StoreError::Corrupt("run vanished after insert".into())
                            })?;
                            return Ok(Ok(created));
                        }
                        Err($crate::store::StoreError::Conflict("runs_one_active_idx")) => {
                            drop(tx);
                            let active: Option<(uuid::Uuid, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
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
                                return Ok(Err($crate::store::QueueRefused::Active { run_id: active_id }));
                            }
                            self.interrupt(active_id, run.created_at).await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err($crate::store::StoreError::Corrupt("could not queue the run".into()))
            }

            async fn start_run(
                &self,
                run_id: uuid::Uuid,
                window: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
                skipped: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<bool> {
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

            async fn heartbeat(
                &self,
                run_ids: &[uuid::Uuid],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<()> {
                for chunk in run_ids.chunks($crate::store::sql::INSERT_CHUNK) {
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

            async fn interrupt_stale_runs(
                &self,
                stale_before: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<u64> {
                let done = sqlx::query(
                    "update runs set status = 'interrupted', finished_at = $2, \
                     error = 'the service stopped while this run was in progress; its window is read again by the next run' \
                     where status in ('queued', 'running') and (heartbeat_at is null or heartbeat_at < $1)",
                )
                .bind(stale_before)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn log_group_states(
                &self,
                inspection_id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Vec<$crate::store::LogGroupState>> {
                let rows: Vec<(String, Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>)> =
                    sqlx::query_as(
                        "select log_group, watermark, baseline_until from log_group_state where inspection_id = $1",
                    )
                    .bind(inspection_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(log_group, watermark, baseline_until)| $crate::store::LogGroupState {
                        log_group,
                        watermark,
                        baseline_until,
                    })
                    .collect())
            }

            async fn finish_run(&self, run: &$crate::store::FinishedRun) -> $crate::store::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let clusters_new = run.run_clusters.iter().filter(|c| c.is_new).count() as i64;
                let done = sqlx::query(
                    "update runs set status = $2, window_start = $3, window_end = $4, skipped_start = $5, \
                     skipped_end = $6, finished_at = $7, records_scanned = $8, error_records = $9, \
                     malformed_records = $10, ignored_records = $11, clusters_total = $12, clusters_new = $13, \
                     new_error_records = $14, baseline_clusters = $15, aws_api_calls = $16, log_groups = $17, \
                     error = $18, report = $19, heartbeat_at = $7 \
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
                .bind(sqlx::types::Json(&run.log_groups))
                .bind(&run.error)
                .bind(run.report.as_ref().map(sqlx::types::Json))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    // Someone declared this run dead; what it learned must not be half-applied
                    // next to whichever run followed.
                    return Ok(false);
                }

                Self::write_clusters(&mut tx, run).await?;
                Self::write_run_clusters(&mut tx, run).await?;
                Self::write_access_keys(&mut tx, run).await?;

                for state in &run.group_states {
                    sqlx::query(
                        "insert into log_group_state (inspection_id, log_group, watermark, baseline_until, updated_at) \
                         values ($1, $2, $3, $4, $5) \
                         on conflict (inspection_id, log_group) do update set \
                         watermark = coalesce(excluded.watermark, log_group_state.watermark), \
                         baseline_until = coalesce(excluded.baseline_until, log_group_state.baseline_until), \
                         updated_at = excluded.updated_at",
                    )
                    .bind(run.inspection_id)
                    .bind(&state.log_group)
                    .bind(state.watermark)
                    .bind(state.baseline_until)
                    .bind(run.finished_at)
                    .execute(&mut *tx)
                    .await?;
                }

                Self::write_dimensions(&mut tx, run).await?;
                Self::write_events(&mut tx, run).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn fail_run(
                &self,
                run_id: uuid::Uuid,
                status: $crate::model::run::RunStatus,
                error: &str,
                log_groups: &[$crate::model::run::LogGroupOutcome],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "update runs set status = $2, error = $3, log_groups = $4, finished_at = $5 \
                     where id = $1 and status in ('queued', 'running')",
                )
                .bind(run_id)
                .bind(status.as_str())
                .bind(error)
                .bind(sqlx::types::Json(log_groups))
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_run(&self, id: uuid::Uuid) -> $crate::store::StoreResult<Option<$crate::model::run::Run>> {
                let sql = format!("select {} from runs where id = $1", $crate::store::sql::RUN_COLUMNS);
                let row = sqlx::query_as::<$db, $crate::store::sql::RunRow>(&sql)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.into_model()).transpose()
            }

            async fn list_runs(
                &self,
                filter: &$crate::store::RunFilter,
                after: Option<$crate::store::TimeKey>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::model::run::Run>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "select {} from runs where 1 = 1",
                    $crate::store::sql::RUN_LIST_COLUMNS
                ));
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
                $crate::store::sql::RUN_ORDER.push_page(&mut qb, after, limit);
                let rows = qb
                    .build_query_as::<$crate::store::sql::RunRow>()
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(|r| r.into_model()).collect()
            }

            async fn active_run_count(&self) -> $crate::store::StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as("select count(*) from runs where status in ('queued', 'running')")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn interrupt_owned_runs(
                &self,
                owner_prefix: &str,
                now: chrono::DateTime<chrono::Utc>,
                reason: &str,
            ) -> $crate::store::StoreResult<u64> {
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

        }

        impl $store {
            async fn interrupt(
                &self,
                run_id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "update runs set status = 'interrupted', finished_at = $2, \
                     error = 'the service stopped while this run was in progress; its window is read again by the next run' \
                     where id = $1 and status in ('queued', 'running')",
                )
                .bind(run_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}

pub(super) use sql_store;
