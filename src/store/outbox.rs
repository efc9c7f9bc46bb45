//! Events and Guance registrations: the outbox from runs to Guance.
//!
//! A finished run writes its events here in its own transaction (see `runs.rs`); the
//! outbox's workers then claim them, deliver them and record how each attempt ended. Claims
//! are leases in rows (`claimed_until`), so several instances never send the same event and
//! a crashed worker's claims expire. Each dimension (inspection, cloud account) goes out in
//! order. Inspections' registrations in Guance (`guance_checkers`) are claimed and finished
//! the same way.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::keyset::Dir::Desc;
use super::keyset::{Order, TimeKey};
use super::sql::INSERT_CHUNK;
use super::{FinishedRun, PgStore, SqliteStore, StoreError, StoreResult};
use crate::model::event::{DeliveryState, EventView};

/// An event a finished run records.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_id: String,
    pub account_id: String,
    pub status: String,
    pub is_silent: bool,
    pub delivery_state: DeliveryState,
    pub delivery_note: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub fault_id: Option<String>,
    /// The rendered event (`guance::event::GuanceEvent`).
    pub event: serde_json::Value,
}

/// Which events to list across inspections: every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub inspection_id: Option<Uuid>,
    pub account_id: Option<String>,
    /// Events created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events created before this time.
    pub until: Option<DateTime<Utc>>,
}

/// An event claimed for delivery.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub event_id: String,
    pub inspection_id: Uuid,
    pub account_id: String,
    pub attempts: i32,
    pub expires_at: DateTime<Utc>,
    pub event: serde_json::Value,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Sent,
    /// Try again at `at` (Guance down, 5xx, timeout).
    Retry {
        error: String,
        at: DateTime<Utc>,
    },
    /// Refused for good (4xx): not retried.
    Failed {
        error: String,
    },
    /// Undelivered past its expiry.
    Expired {
        error: String,
    },
}

/// A registration in Guance to bring up to date: to push a change made here, to read back
/// changes made in Guance, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckerJob {
    pub ref_key: String,
    /// None: the inspection was deleted, so the registration is to be deleted.
    pub inspection_id: Option<Uuid>,
    pub attempts: i32,
    /// `rul_…`, once Guance assigned it.
    pub checker_id: Option<String>,
    /// What the last sync left (`guance::sync::Memory` as JSON); None before the first.
    pub memory: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckerOutcome {
    /// Both sides agree. The registration is `synced` unless the inspection changed again
    /// after `started` (the claim), which leaves it pending for the next pass.
    Synced {
        checker_id: Option<String>,
        memory: serde_json::Value,
        started: DateTime<Utc>,
        /// A problem that did not stop the sync (an edit in Guance that could not be adopted).
        note: Option<String>,
    },
    /// The registration of a deleted inspection is gone from Guance.
    Deleted,
    /// The checker was deleted in Guance; the inspection is kept and not registered again
    /// until asked.
    DeletedInGuance,
    /// Nothing was done (the inspection changed during the sync); try again soon.
    Retry {
        at: DateTime<Utc>,
    },
    Failed {
        error: String,
        retry_at: DateTime<Utc>,
    },
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Alerting state of each cloud account of an inspection (JSON, see `guance::alerting`).
    async fn dimension_states(&self, inspection_id: Uuid) -> StoreResult<HashMap<String, serde_json::Value>>;
    /// Claims up to `limit` deliverable events until `lease_until`: pending, due, not held by
    /// another worker, and the oldest pending of their dimension (so each dimension's events
    /// go out in order). Several instances never claim the same event.
    async fn claim_events(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxEvent>>;
    async fn finish_delivery(&self, id: Uuid, outcome: &DeliveryOutcome, now: DateTime<Utc>) -> StoreResult<()>;
    /// Events waiting for delivery.
    async fn outbox_backlog(&self) -> StoreResult<i64>;
    /// Events by delivery state (for metrics).
    async fn event_counts(&self) -> StoreResult<Vec<(String, i64)>>;
    /// Up to `limit` events of an inspection after `after`, newest first, without the
    /// rendered event.
    async fn list_events(&self, inspection_id: Uuid, after: Option<TimeKey>, limit: i64)
    -> StoreResult<Vec<EventView>>;
    async fn get_event(&self, id: Uuid) -> StoreResult<Option<EventView>>;
    /// Up to `limit` events matching `filter` after `after`, newest first, without the
    /// rendered event: an inspection's, a cloud account's across inspections, a time range.
    async fn search_events(
        &self,
        filter: &EventFilter,
        after: Option<TimeKey>,
        limit: i64,
    ) -> StoreResult<Vec<EventView>>;
    /// Claims registrations due for syncing with Guance: those with a change to push (or a
    /// failed attempt to retry), and synced ones last read back before `pull_before`.
    async fn claim_checker_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
        pull_before: DateTime<Utc>,
    ) -> StoreResult<Vec<CheckerJob>>;
    /// Claims one inspection's registration to read it back now (before a run), unless it
    /// was read back after `fresh_after`, another worker holds it, its checker was deleted in
    /// Guance, or its last attempt failed and waits for its retry (so runs do not each wait
    /// for a Guance that is down).
    async fn claim_checker_pull(
        &self,
        inspection_id: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        fresh_after: DateTime<Utc>,
    ) -> StoreResult<Option<CheckerJob>>;
    async fn finish_checker_job(&self, ref_key: &str, outcome: &CheckerOutcome, now: DateTime<Utc>) -> StoreResult<()>;
}

const EVENT_COLUMNS: &str = "id, event_id, inspection_id, run_id, account_id, status, is_silent, \
     delivery_state, delivery_note, attempts, last_error, next_attempt_at, sent_at, created_at, expires_at, \
     fault_id, event";

const EVENT_ORDER: Order = Order(&[("created_at", Desc), ("id", Desc)]);

#[derive(sqlx::FromRow)]
struct EventRow {
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
    fn into_model(self, full: bool) -> Result<EventView, StoreError> {
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

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: Uuid,
    event_id: String,
    inspection_id: Uuid,
    account_id: String,
    attempts: i32,
    expires_at: DateTime<Utc>,
    event: Json<serde_json::Value>,
}

impl From<OutboxRow> for OutboxEvent {
    fn from(r: OutboxRow) -> Self {
        OutboxEvent {
            id: r.id,
            event_id: r.event_id,
            inspection_id: r.inspection_id,
            account_id: r.account_id,
            attempts: r.attempts,
            expires_at: r.expires_at,
            event: r.event.0,
        }
    }
}

/// What a registration whose checker was deleted in Guance says.
pub const DELETED_IN_GUANCE: &str = "the self-built checker was deleted in Guance; the inspection is kept. \
    POST /api/v1/inspections/{id}/guance/register registers it again";

/// Claims the deliverable events: see [`OutboxStore::claim_events`]. `{skip_locked}` is the
/// backend's way to pass over rows another transaction is claiming (none on SQLite, whose
/// single writer makes the statement atomic anyway).
fn claim_events_sql(skip_locked: &str) -> String {
    format!(
        "update events set claimed_until = $2, claimed_by = $3 where id in ( \
           select e.id from events e \
           where e.delivery_state = 'pending' and (e.next_attempt_at is null or e.next_attempt_at <= $1) \
             and (e.claimed_until is null or e.claimed_until < $1) \
             and not exists (select 1 from events p where p.inspection_id = e.inspection_id \
               and p.account_id = e.account_id and p.delivery_state = 'pending' \
               and (p.created_at < e.created_at or (p.created_at = e.created_at and p.id < e.id))) \
           order by e.created_at, e.id limit $4{skip_locked}) \
         returning id, event_id, inspection_id, account_id, attempts, expires_at, event"
    )
}

/// Claims the registrations due for syncing; `{skip_locked}` as in [`claim_events_sql`].
fn claim_checker_jobs_sql(skip_locked: &str) -> String {
    format!(
        "update guance_checkers set claimed_until = $2 where ref_key in ( \
           select ref_key from guance_checkers where \
             ((state in ('pending', 'failed') and next_attempt_at <= $1) \
              or (state = 'synced' and inspection_id is not null \
                  and coalesce(last_pulled_at, synced_at, updated_at) <= $4)) \
             and (claimed_until is null or claimed_until < $1) \
           order by next_attempt_at limit $3{skip_locked}) \
         returning {CHECKER_JOB_COLUMNS}"
    )
}

const CHECKER_JOB_COLUMNS: &str = "ref_key, inspection_id, attempts, checker_id, sync_memory";

#[derive(sqlx::FromRow)]
struct CheckerJobRow {
    ref_key: String,
    inspection_id: Option<Uuid>,
    attempts: i32,
    checker_id: Option<String>,
    sync_memory: Option<Json<serde_json::Value>>,
}

impl From<CheckerJobRow> for CheckerJob {
    fn from(r: CheckerJobRow) -> Self {
        CheckerJob {
            ref_key: r.ref_key,
            inspection_id: r.inspection_id,
            attempts: r.attempts,
            checker_id: r.checker_id,
            memory: r.sync_memory.map(|m| m.0),
        }
    }
}

/// [`OutboxStore`] for a store over one sqlx backend, and the event and alerting-state
/// writes of a finished run.
macro_rules! outbox_store {
    ($store:ident, $db:ty) => {
        #[async_trait]
        impl OutboxStore for $store {
            async fn dimension_states(&self, inspection_id: Uuid) -> StoreResult<HashMap<String, serde_json::Value>> {
                let rows: Vec<(String, Json<serde_json::Value>)> =
                    sqlx::query_as("select account_id, state from alert_dimensions where inspection_id = $1")
                        .bind(inspection_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(a, s)| (a, s.0)).collect())
            }

            async fn claim_events(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<OutboxEvent>> {
                let sql = claim_events_sql(Self::SKIP_LOCKED);
                let rows = sqlx::query_as::<$db, OutboxRow>(&sql)
                    .bind(now)
                    .bind(lease_until)
                    .bind(owner)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out: Vec<OutboxEvent> = rows.into_iter().map(Into::into).collect();
                out.sort_by_key(|e| e.id);
                Ok(out)
            }

            async fn finish_delivery(&self, id: Uuid, outcome: &DeliveryOutcome, now: DateTime<Utc>) -> StoreResult<()> {
                use DeliveryOutcome as O;
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

            async fn outbox_backlog(&self) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as("select count(*) from events where delivery_state = 'pending'")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn event_counts(&self) -> StoreResult<Vec<(String, i64)>> {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "select delivery_state, count(*) from events group by delivery_state order by delivery_state",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn list_events(
                &self,
                inspection_id: Uuid,
                after: Option<TimeKey>,
                limit: i64,
            ) -> StoreResult<Vec<EventView>> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new(format!("select {EVENT_COLUMNS} from events where inspection_id = "));
                qb.push_bind(inspection_id);
                EVENT_ORDER.push_page(&mut qb, after, limit);
                let rows = qb.build_query_as::<EventRow>().fetch_all(&self.pool).await?;
                rows.into_iter().map(|r| r.into_model(false)).collect()
            }

            async fn search_events(
                &self,
                filter: &EventFilter,
                after: Option<TimeKey>,
                limit: i64,
            ) -> StoreResult<Vec<EventView>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!("select {EVENT_COLUMNS} from events where 1 = 1"));
                if let Some(id) = filter.inspection_id {
                    qb.push(" and inspection_id = ").push_bind(id);
                }
                if let Some(account) = &filter.account_id {
                    qb.push(" and account_id = ").push_bind(account.clone());
                }
                if let Some(since) = filter.since {
                    qb.push(" and created_at >= ").push_bind(since);
                }
                if let Some(until) = filter.until {
                    qb.push(" and created_at < ").push_bind(until);
                }
                EVENT_ORDER.push_page(&mut qb, after, limit);
                let rows = qb.build_query_as::<EventRow>().fetch_all(&self.pool).await?;
                rows.into_iter().map(|r| r.into_model(false)).collect()
            }

            async fn get_event(&self, id: Uuid) -> StoreResult<Option<EventView>> {
                let sql = format!("select {EVENT_COLUMNS} from events where id = $1");
                let row = sqlx::query_as::<$db, EventRow>(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.map(|r| r.into_model(true)).transpose()
            }

            async fn claim_checker_jobs(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
                pull_before: DateTime<Utc>,
            ) -> StoreResult<Vec<CheckerJob>> {
                let sql = claim_checker_jobs_sql(Self::SKIP_LOCKED);
                let rows = sqlx::query_as::<$db, CheckerJobRow>(&sql)
                    .bind(now)
                    .bind(lease_until)
                    .bind(limit)
                    .bind(pull_before)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn claim_checker_pull(
                &self,
                inspection_id: Uuid,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                fresh_after: DateTime<Utc>,
            ) -> StoreResult<Option<CheckerJob>> {
                let sql = format!(
                    "update guance_checkers set claimed_until = $2 where inspection_id = $1 \
                     and state <> 'deleted_in_guance' and (claimed_until is null or claimed_until < $3) \
                     and (last_pulled_at is null or last_pulled_at < $4) \
                     and not (state = 'failed' and next_attempt_at > $3) returning {CHECKER_JOB_COLUMNS}"
                );
                let row = sqlx::query_as::<$db, CheckerJobRow>(&sql)
                    .bind(inspection_id)
                    .bind(lease_until)
                    .bind(now)
                    .bind(fresh_after)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
            }

            async fn finish_checker_job(
                &self,
                ref_key: &str,
                outcome: &CheckerOutcome,
                now: DateTime<Utc>,
            ) -> StoreResult<()> {
                match outcome {
                    CheckerOutcome::Deleted => {
                        sqlx::query("delete from guance_checkers where ref_key = $1 and inspection_id is null")
                            .bind(ref_key)
                            .execute(&self.pool)
                            .await?;
                    }
                    // The memory is kept whatever happened meanwhile (it says what Guance now
                    // holds); the state is `synced` only if nothing changed here since the claim.
                    CheckerOutcome::Synced { checker_id, memory, started, note } => {
                        sqlx::query(
                            "update guance_checkers set checker_id = coalesce($2, checker_id), sync_memory = $3, \
                             last_pulled_at = $4, synced_at = $4, error = $6, claimed_until = null, \
                             state = case when updated_at <= $5 then 'synced' else state end, \
                             attempts = case when updated_at <= $5 then 0 else attempts end \
                             where ref_key = $1",
                        )
                        .bind(ref_key)
                        .bind(checker_id)
                        .bind(Json(memory))
                        .bind(now)
                        .bind(started)
                        .bind(note)
                        .execute(&self.pool)
                        .await?;
                    }
                    CheckerOutcome::DeletedInGuance => {
                        sqlx::query(
                            "update guance_checkers set state = 'deleted_in_guance', error = $2, \
                             last_pulled_at = $3, claimed_until = null where ref_key = $1",
                        )
                        .bind(ref_key)
                        .bind(DELETED_IN_GUANCE)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                    }
                    CheckerOutcome::Retry { at } => {
                        sqlx::query(
                            "update guance_checkers set next_attempt_at = $2, claimed_until = null where ref_key = $1",
                        )
                        .bind(ref_key)
                        .bind(at)
                        .execute(&self.pool)
                        .await?;
                    }
                    CheckerOutcome::Failed { error, retry_at } => {
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
            /// The run's new alerting state of each cloud account it saw.
            pub(super) async fn write_dimensions(
                conn: &mut <$db as sqlx::Database>::Connection,
                run: &FinishedRun,
            ) -> StoreResult<()> {
                for (account, state) in &run.dimensions {
                    sqlx::query(
                        "insert into alert_dimensions (inspection_id, account_id, state, updated_at) \
                         values ($1, $2, $3, $4) on conflict (inspection_id, account_id) do update set \
                         state = excluded.state, updated_at = excluded.updated_at",
                    )
                    .bind(run.inspection_id)
                    .bind(account)
                    .bind(Json(state))
                    .bind(run.finished_at)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            /// The run's events, for the outbox to deliver. An event id written before is left
            /// as it is.
            pub(super) async fn write_events(
                conn: &mut <$db as sqlx::Database>::Connection,
                run: &FinishedRun,
            ) -> StoreResult<()> {
                for chunk in run.events.chunks(INSERT_CHUNK) {
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
                            .push_bind(Json(&e.event));
                    });
                    qb.push(" on conflict (event_id) do nothing");
                    qb.build().execute(&mut *conn).await?;
                }
                Ok(())
            }
        }
    };
}

outbox_store!(PgStore, sqlx::Postgres);
outbox_store!(SqliteStore, sqlx::Sqlite);
