//! The built-in scheduler: starts each enabled inspection on its `schedule`, when no outside
//! caller (DataFlux Func, cron) does.
//!
//! Exactly once per slot, across every instance sharing a database: before starting a slot an
//! instance inserts `(inspection, slot)` into `schedule_slots`, whose primary key lets one
//! insert win; the losers do nothing. Memory only saves queries (the newest slot this process
//! saw claimed), it never decides.
//!
//! Missed slots are not replayed: each tick looks at the newest due slot only, so after a
//! pause one run starts, and its window reaches back to the watermark, covering the gap. A
//! slot that started before the inspection was last changed (created, edited, enabled) is not
//! due, so a new inspection first runs at the `next_run_at` it showed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::model::inspection::Inspection;
use crate::model::run::{RunRequest, Trigger};
use crate::model::schedule::{Schedule, spread_offset};
use crate::model::time;
use crate::runner::{Runner, TriggerError};
use crate::store::{DynStore, InspectionFilter, SlotOutcome, StoreResult};

/// The built-in scheduler's settings; the API uses them too, to show `next_run_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleSettings {
    pub enabled: bool,
    pub spread: Duration,
}

impl ScheduleSettings {
    pub const DEFAULT_SPREAD: Duration = Duration::from_secs(60);
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings { enabled: true, spread: Self::DEFAULT_SPREAD }
    }
}

/// How often `serve` ticks.
pub const TICK: Duration = Duration::from_secs(1);
/// Claimed slots are kept this long (each inspection's newest one always).
const SLOT_RETENTION_DAYS: i64 = 7;
const PAGE: i64 = 200;

/// What one tick did with one inspection's due slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotAction {
    pub inspection_id: Uuid,
    pub slot: DateTime<Utc>,
    pub outcome: SlotOutcome,
    pub run_id: Option<Uuid>,
}

pub struct Scheduler {
    store: DynStore,
    runner: Arc<Runner>,
    spread_secs: u64,
    owner: String,
    /// Newest slot known to be claimed, per inspection: spares an insert per inspection per tick.
    claimed: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    last_prune: Mutex<Option<DateTime<Utc>>>,
}

/// When an inspection's next scheduled run starts, or None when the scheduler will not start
/// it (scheduler off, inspection disabled, schedule unreadable).
pub fn next_run_at(inspection: &Inspection, settings: ScheduleSettings, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if !settings.enabled || !inspection.enabled {
        return None;
    }
    let schedule = Schedule::compile(&inspection.settings.schedule, &inspection.settings.schedule_timezone).ok()?;
    let offset = spread_offset(inspection.id, settings.spread.as_secs());
    // A slot older than the last change is never due (see the module docs).
    let from = now.max(inspection.updated_at);
    schedule.next_start_after(offset, from)
}

impl Scheduler {
    pub fn new(store: DynStore, runner: Arc<Runner>, settings: ScheduleSettings) -> Arc<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        Arc::new(Scheduler {
            store,
            runner,
            spread_secs: settings.spread.as_secs(),
            owner: format!("{host}/{}/scheduler", std::process::id()),
            claimed: Mutex::new(HashMap::new()),
            last_prune: Mutex::new(None),
        })
    }

    /// Ticks every [`TICK`] until the process ends.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let scheduler = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = scheduler.tick(time::now()).await {
                    tracing::warn!(error = %e, "scheduler tick failed; trying again next tick");
                }
            }
        })
    }

    /// Starts every slot due at `now` that no instance has claimed yet, and returns what it did.
    pub async fn tick(&self, now: DateTime<Utc>) -> StoreResult<Vec<SlotAction>> {
        let mut actions = Vec::new();
        let filter = InspectionFilter { enabled: Some(true), name_contains: None };
        let mut after = None;
        loop {
            let page = self.store.list_inspections(&filter, after, PAGE).await?;
            let done = (page.len() as i64) < PAGE;
            after = page.last().map(|i| (i.created_at, i.id));
            for inspection in page {
                if let Some(action) = self.tick_one(&inspection, now).await? {
                    actions.push(action);
                }
            }
            if done {
                break;
            }
        }
        self.prune(now).await;
        Ok(actions)
    }

    async fn tick_one(&self, inspection: &Inspection, now: DateTime<Utc>) -> StoreResult<Option<SlotAction>> {
        let Ok(schedule) = Schedule::compile(&inspection.settings.schedule, &inspection.settings.schedule_timezone)
        else {
            return Ok(None); // validated on write; an unreadable one is skipped, not fatal
        };
        let offset = spread_offset(inspection.id, self.spread_secs);
        let Some(slot) = schedule.due_slot(offset, now) else { return Ok(None) };
        if slot + offset <= inspection.updated_at {
            return Ok(None);
        }
        if self.claimed.lock().expect("claimed lock").get(&inspection.id).is_some_and(|c| *c >= slot) {
            return Ok(None);
        }
        let won = self.store.claim_schedule_slot(inspection.id, slot, &self.owner, now).await?;
        self.claimed.lock().expect("claimed lock").insert(inspection.id, slot);
        if !won {
            return Ok(None);
        }
        let trace_id = format!("SCHEDULE-{}", slot.format("%Y-%m-%dT%H:%M:%SZ"));
        let (outcome, run_id, detail) = match self
            .runner
            .trigger(inspection.id, Trigger::Schedule, RunRequest::default(), Some(trace_id))
            .await
        {
            Ok(started) => {
                tracing::info!(inspection = %inspection.name, %slot, run_id = %started.run.id, "scheduled run started");
                (SlotOutcome::Started, Some(started.run.id), None)
            }
            Err(TriggerError::Active { run_id }) => {
                tracing::info!(inspection = %inspection.name, %slot, %run_id, "slot skipped: a run is in progress");
                (SlotOutcome::Skipped, None, Some(format!("run {run_id} was still in progress")))
            }
            Err(TriggerError::Disabled) => (SlotOutcome::Skipped, None, Some("the inspection is disabled".into())),
            Err(TriggerError::NotFound) => return Ok(None), // deleted; its slots went with it
            Err(e) => {
                tracing::warn!(inspection = %inspection.name, %slot, error = %e, "scheduled run could not be queued");
                (SlotOutcome::Failed, None, Some(e.to_string()))
            }
        };
        self.store.record_schedule_slot(inspection.id, slot, outcome, run_id, detail.as_deref()).await?;
        Ok(Some(SlotAction { inspection_id: inspection.id, slot, outcome, run_id }))
    }

    /// Hourly, forgets old claimed slots.
    async fn prune(&self, now: DateTime<Utc>) {
        {
            let mut last = self.last_prune.lock().expect("prune lock");
            if last.is_some_and(|t| now - t < TimeDelta::hours(1)) {
                return;
            }
            *last = Some(now);
        }
        match self.store.prune_schedule_slots(now - TimeDelta::days(SLOT_RETENTION_DAYS)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(slots = n, "forgot old schedule slots"),
            Err(e) => tracing::warn!(error = %e, "could not prune schedule slots"),
        }
    }
}
