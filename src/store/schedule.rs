//! Schedule slots: which cron slot of which inspection was claimed, by whom, and what became
//! of it. The primary key `(inspection_id, slot)` is what lets one instance, and only one,
//! start a slot when several share the database.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PgStore, SqliteStore, StoreError, StoreResult};

/// What became of a claimed schedule slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOutcome {
    /// Claimed; the outcome is not written yet (or the instance stopped before it was).
    Claimed,
    /// A run was started (`run_id`).
    Started,
    /// Not run: a run of the inspection was still in progress, or it was disabled meanwhile.
    Skipped,
    /// The run could not be queued (`detail` says why).
    Failed,
}

impl SlotOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotOutcome::Claimed => "claimed",
            SlotOutcome::Started => "started",
            SlotOutcome::Skipped => "skipped",
            SlotOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "claimed" => SlotOutcome::Claimed,
            "started" => SlotOutcome::Started,
            "skipped" => SlotOutcome::Skipped,
            "failed" => SlotOutcome::Failed,
            _ => return None,
        })
    }
}

/// A claimed schedule slot.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSlot {
    pub inspection_id: Uuid,
    pub slot: DateTime<Utc>,
    pub claimed_at: DateTime<Utc>,
    pub owner: String,
    pub outcome: SlotOutcome,
    pub run_id: Option<Uuid>,
    pub detail: Option<String>,
}

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Claims one schedule slot of an inspection. False when it was claimed before, by any
    /// instance sharing the database: then the caller must not start it.
    async fn claim_schedule_slot(
        &self,
        inspection_id: Uuid,
        slot: DateTime<Utc>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records what became of a claimed slot.
    async fn record_schedule_slot(
        &self,
        inspection_id: Uuid,
        slot: DateTime<Utc>,
        outcome: SlotOutcome,
        run_id: Option<Uuid>,
        detail: Option<&str>,
    ) -> StoreResult<()>;
    /// An inspection's claimed slots, newest first.
    async fn schedule_slots(&self, inspection_id: Uuid, limit: i64) -> StoreResult<Vec<ScheduleSlot>>;
    /// Forgets slots claimed before `before`, except each inspection's newest, which must stay
    /// claimed so it cannot start twice.
    async fn prune_schedule_slots(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

#[derive(sqlx::FromRow)]
struct SlotRow {
    inspection_id: Uuid,
    slot: DateTime<Utc>,
    claimed_at: DateTime<Utc>,
    owner: String,
    outcome: String,
    run_id: Option<Uuid>,
    detail: Option<String>,
}

impl SlotRow {
    fn into_model(self) -> StoreResult<ScheduleSlot> {
        let outcome = SlotOutcome::parse(&self.outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown slot outcome {:?}", self.outcome)))?;
        Ok(ScheduleSlot {
            inspection_id: self.inspection_id,
            slot: self.slot,
            claimed_at: self.claimed_at,
            owner: self.owner,
            outcome,
            run_id: self.run_id,
            detail: self.detail,
        })
    }
}

/// [`ScheduleStore`] for a store over one sqlx backend.
macro_rules! schedule_store {
    ($store:ident, $db:ty) => {
        #[async_trait]
        impl ScheduleStore for $store {
            async fn claim_schedule_slot(
                &self,
                inspection_id: Uuid,
                slot: DateTime<Utc>,
                owner: &str,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                // Selecting from inspections makes a slot of a just-deleted inspection a no-op
                // instead of a foreign-key error.
                let done = sqlx::query(
                    "insert into schedule_slots (inspection_id, slot, claimed_at, owner, outcome) \
                     select id, $2, $3, $4, 'claimed' from inspections where id = $1 \
                     on conflict (inspection_id, slot) do nothing",
                )
                .bind(inspection_id)
                .bind(slot)
                .bind(now)
                .bind(owner)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn record_schedule_slot(
                &self,
                inspection_id: Uuid,
                slot: DateTime<Utc>,
                outcome: SlotOutcome,
                run_id: Option<Uuid>,
                detail: Option<&str>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "update schedule_slots set outcome = $3, run_id = $4, detail = $5 \
                     where inspection_id = $1 and slot = $2",
                )
                .bind(inspection_id)
                .bind(slot)
                .bind(outcome.as_str())
                .bind(run_id)
                .bind(detail)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn schedule_slots(&self, inspection_id: Uuid, limit: i64) -> StoreResult<Vec<ScheduleSlot>> {
                let rows = sqlx::query_as::<$db, SlotRow>(
                    "select inspection_id, slot, claimed_at, owner, outcome, run_id, detail from schedule_slots \
                     where inspection_id = $1 order by slot desc limit $2",
                )
                .bind(inspection_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(SlotRow::into_model).collect()
            }

            async fn prune_schedule_slots(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query(
                    "delete from schedule_slots where claimed_at < $1 and slot < \
                     (select max(s.slot) from schedule_slots s where s.inspection_id = schedule_slots.inspection_id)",
                )
                .bind(before)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

schedule_store!(PgStore, sqlx::Postgres);
schedule_store!(SqliteStore, sqlx::Sqlite);
