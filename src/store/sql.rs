//! The portable SQL behind [`Store`](super::Store), written once and instantiated per backend
//! by [`sql_store!`].
//!
//! Portable means: `$n` placeholders (SQLite reads them positionally too), row-value keyset
//! comparisons, `on conflict … do update`, `case` instead of `least`/`greatest`, timestamps
//! and JSON bound from Rust rather than computed by the database.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::model::event::{DeliveryState, EventView};
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
pub(super) const EVENT_ORDER: Order = Order(&[("created_at", Desc), ("id", Desc)]);

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

pub(super) const EVENT_COLUMNS: &str = "id, event_id, inspection_id, run_id, account_id, status, is_silent, \
     delivery_state, delivery_note, attempts, last_error, next_attempt_at, sent_at, created_at, expires_at, \
     fault_id, event";

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    id: Uuid,
    event_id: String,
    inspection_id: Uuid,
    run_id: Uuid,
    account_id: String,
    status: String,
    is_silent: bool,
    delivery_state: String,
    delivery_note: Option<String>,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    fault_id: Option<String>,
    event: Json<serde_json::Value>,
}

impl EventRow {
    /// `full`: include the whole rendered event.
    pub(super) fn into_model(self, full: bool) -> Result<EventView, StoreError> {
        let e = &self.event.0;
        let time = |v: &serde_json::Value| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok();
        let fault = &e["fault"];
        let recovery = self.status == "ok";
        Ok(EventView {
            id: self.id,
            event_id: self.event_id,
            inspection_id: self.inspection_id,
            run_id: self.run_id,
            account_id: self.account_id,
            title: e["title"].as_str().unwrap_or_default().to_string(),
            status: self.status,
            is_silent: self.is_silent,
            delivery_state: DeliveryState::parse(&self.delivery_state)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery state {:?}", self.delivery_state)))?,
            delivery_note: self.delivery_note,
            attempts: self.attempts,
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at,
            sent_at: self.sent_at,
            created_at: self.created_at,
            expires_at: self.expires_at,
            fault_id: self.fault_id,
            anomaly_time: time(&fault["start_time"]),
            recovery_time: if recovery { time(&e["time"]) } else { None },
            duration_secs: fault["duration_secs"].as_i64(),
            event: if full { Some(self.event.0) } else { None },
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
    ($store:ty, $db:ty, $backend:literal, $skip_locked:literal) => {
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

                for (account, state) in &run.dimensions {
                    sqlx::query(
                        "insert into alert_dimensions (inspection_id, account_id, state, updated_at) \
                         values ($1, $2, $3, $4) on conflict (inspection_id, account_id) do update set \
                         state = excluded.state, updated_at = excluded.updated_at",
                    )
                    .bind(run.inspection_id)
                    .bind(account)
                    .bind(sqlx::types::Json(state))
                    .bind(run.finished_at)
                    .execute(&mut *tx)
                    .await?;
                }

                for chunk in run.events.chunks($crate::store::sql::INSERT_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "insert into events (id, event_id, inspection_id, run_id, account_id, status, is_silent, \
                         delivery_state, delivery_note, attempts, next_attempt_at, created_at, expires_at, fault_id, event) ",
                    );
                    qb.push_values(chunk, |mut b, e| {
                        b.push_bind(e.id)
                            .push_bind(&e.event_id)
                            .push_bind(run.inspection_id)
                            .push_bind(run.run_id)
                            .push_bind(&e.account_id)
                            .push_bind(&e.status)
                            .push_bind(e.is_silent)
                            .push_bind(e.delivery_state.as_str())
                            .push_bind(&e.delivery_note)
                            .push_bind(0i32)
                            .push_bind(run.finished_at)
                            .push_bind(run.finished_at)
                            .push_bind(e.expires_at)
                            .push_bind(&e.fault_id)
                            .push_bind(sqlx::types::Json(&e.event));
                    });
                    qb.push(" on conflict (event_id) do nothing");
                    qb.build().execute(&mut *tx).await?;
                }
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

            async fn dimension_states(
                &self,
                inspection_id: uuid::Uuid,
            ) -> $crate::store::StoreResult<std::collections::HashMap<String, serde_json::Value>> {
                let rows: Vec<(String, sqlx::types::Json<serde_json::Value>)> =
                    sqlx::query_as("select account_id, state from alert_dimensions where inspection_id = $1")
                        .bind(inspection_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(a, s)| (a, s.0)).collect())
            }

            async fn claim_events(
                &self,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::OutboxEvent>> {
                let sql = format!(
                    "update events set claimed_until = $2, claimed_by = $3 where id in ( \
                       select e.id from events e \
                       where e.delivery_state = 'pending' and (e.next_attempt_at is null or e.next_attempt_at <= $1) \
                         and (e.claimed_until is null or e.claimed_until < $1) \
                         and not exists (select 1 from events p where p.inspection_id = e.inspection_id \
                           and p.account_id = e.account_id and p.delivery_state = 'pending' \
                           and (p.created_at < e.created_at or (p.created_at = e.created_at and p.id < e.id))) \
                       order by e.created_at, e.id limit $4{}) \
                     returning id, event_id, inspection_id, account_id, attempts, expires_at, event",
                    $skip_locked
                );
                #[allow(clippy::type_complexity)]
                let rows: Vec<(
                    uuid::Uuid,
                    String,
                    uuid::Uuid,
                    String,
                    i32,
                    chrono::DateTime<chrono::Utc>,
                    sqlx::types::Json<serde_json::Value>,
                )> = sqlx::query_as(&sql).bind(now).bind(lease_until).bind(owner).bind(limit).fetch_all(&self.pool).await?;
                let mut out: Vec<$crate::store::OutboxEvent> = rows
                    .into_iter()
                    .map(|(id, event_id, inspection_id, account_id, attempts, expires_at, event)| {
                        $crate::store::OutboxEvent { id, event_id, inspection_id, account_id, attempts, expires_at, event: event.0 }
                    })
                    .collect();
                out.sort_by_key(|e| e.id);
                Ok(out)
            }

            async fn finish_delivery(
                &self,
                id: uuid::Uuid,
                outcome: &$crate::store::DeliveryOutcome,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<()> {
                use $crate::store::DeliveryOutcome as O;
                let (state, error, next, sent) = match outcome {
                    O::Sent => ("sent", None, None, Some(now)),
                    O::Retry { error, at } => ("pending", Some(error.as_str()), Some(*at), None),
                    O::Failed { error } => ("failed", Some(error.as_str()), None, None),
                    O::Expired { error } => ("expired", Some(error.as_str()), None, None),
                };
                sqlx::query(
                    "update events set delivery_state = $2, last_error = coalesce($3, last_error), \
                     next_attempt_at = $4, sent_at = $5, attempts = attempts + 1, claimed_until = null \
                     where id = $1",
                )
                .bind(id)
                .bind(state)
                .bind(error)
                .bind(next)
                .bind(sent)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn outbox_backlog(&self) -> $crate::store::StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as("select count(*) from events where delivery_state = 'pending'")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn event_counts(&self) -> $crate::store::StoreResult<Vec<(String, i64)>> {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "select delivery_state, count(*) from events group by delivery_state order by delivery_state",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
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

            async fn list_events(
                &self,
                inspection_id: uuid::Uuid,
                after: Option<$crate::store::TimeKey>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::model::event::EventView>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "select {} from events where inspection_id = ",
                    $crate::store::sql::EVENT_COLUMNS
                ));
                qb.push_bind(inspection_id);
                $crate::store::sql::EVENT_ORDER.push_page(&mut qb, after, limit);
                let rows = qb.build_query_as::<$crate::store::sql::EventRow>().fetch_all(&self.pool).await?;
                rows.into_iter().map(|r| r.into_model(false)).collect()
            }

            async fn get_event(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<$crate::model::event::EventView>> {
                let sql = format!("select {} from events where id = $1", $crate::store::sql::EVENT_COLUMNS);
                let row = sqlx::query_as::<$db, $crate::store::sql::EventRow>(&sql)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.into_model(true)).transpose()
            }

            async fn claim_checker_jobs(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::CheckerJob>> {
                let sql = format!(
                    "update guance_checkers set claimed_until = $2 where ref_key in ( \
                       select ref_key from guance_checkers where state in ('pending', 'failed') \
                         and next_attempt_at <= $1 and (claimed_until is null or claimed_until < $1) \
                       order by next_attempt_at limit $3{}) \
                     returning ref_key, inspection_id, attempts",
                    $skip_locked
                );
                let rows: Vec<(String, Option<uuid::Uuid>, i32)> =
                    sqlx::query_as(&sql).bind(now).bind(lease_until).bind(limit).fetch_all(&self.pool).await?;
                Ok(rows
                    .into_iter()
                    .map(|(ref_key, inspection_id, attempts)| $crate::store::CheckerJob { ref_key, inspection_id, attempts })
                    .collect())
            }

            async fn finish_checker_job(
                &self,
                ref_key: &str,
                outcome: &$crate::store::CheckerOutcome,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<()> {
                use $crate::store::CheckerOutcome as O;
                match outcome {
                    O::Deleted => {
                        sqlx::query("delete from guance_checkers where ref_key = $1 and inspection_id is null")
                            .bind(ref_key)
                            .execute(&self.pool)
                            .await?;
                    }
                    // Only if nothing changed meanwhile: a newer change keeps it pending.
                    O::Synced { checker_id } => {
                        sqlx::query(
                            "update guance_checkers set state = 'synced', checker_id = coalesce($2, checker_id), \
                             error = null, attempts = 0, synced_at = $3, claimed_until = null \
                             where ref_key = $1 and updated_at <= $3",
                        )
                        .bind(ref_key)
                        .bind(checker_id)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                    }
                    O::Failed { error, retry_at } => {
                        sqlx::query(
                            "update guance_checkers set state = 'failed', error = $2, attempts = attempts + 1, \
                             next_attempt_at = $3, claimed_until = null where ref_key = $1",
                        )
                        .bind(ref_key)
                        .bind(error)
                        .bind(retry_at)
                        .execute(&self.pool)
                        .await?;
                    }
                }
                Ok(())
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
