//! From runs to Guance: which events a finished run records (planned here, written by the
//! store in the run's own transaction — an outbox), and the workers that deliver them and
//! keep each inspection's registration in Guance up to date.
//!
//! Delivery loses nothing: an event is written with its run, claimed by one worker at a time
//! (several instances share the work through the database), retried with exponential backoff
//! and jitter on 5xx, timeouts and refused connections until it is sent or expires, and given
//! up at once on a 4xx (a bad token), with the reason kept. Events of one dimension go out in
//! the order they were recorded.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::guance::alerting::{DimensionState, SilentReason};
use crate::guance::client::{CheckerSpec, GuanceClient, GuanceError, RefFuncInfo};
use crate::guance::event::{self, AccountRun, EventCluster, EventContext, GuanceEvent};
use crate::model::Secret;
use crate::model::cluster::{AccessKeyView, ClusterSummary};
use crate::model::event::DeliveryState;
use crate::model::inspection::{Inspection, guance_ref_key};
use crate::model::run::{ExecMode, RunEventSummary, RunStatus};
use crate::model::time;
use crate::store::{CheckerOutcome, DeliveryOutcome, DynStore, NewEvent, OutboxEvent};

/// The function Guance shows as the source of the inspections and events.
pub const FUNC_ID: &str = "cloudtrail_inspector.run";

/// What the runner needs to know to plan events.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// Base URL of this service, for links (no trailing slash).
    pub public_url: String,
    /// Whether a Guance workspace is configured; without one, events are recorded only.
    pub guance_configured: bool,
    /// How long an undelivered event is retried.
    pub expiry: Duration,
}

impl EventSettings {
    /// Where the service is reached when no public URL is given: its default listen address.
    pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";
    pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            public_url: Self::DEFAULT_PUBLIC_URL.into(),
            guance_configured: false,
            expiry: Self::DEFAULT_EXPIRY,
        }
    }
}

pub const NOT_CONFIGURED: &str =
    "not sent: Guance is not configured (set GUANCE_API_KEY_ID and GUANCE_API_KEY, and GUANCE_NODE)";

/// A finished run, as far as its events are concerned.
pub struct RunEvents<'a> {
    pub inspection: &'a Inspection,
    pub run_id: Uuid,
    /// `df_crontab_exec_mode` of its events.
    pub exec_mode: ExecMode,
    pub window: (DateTime<Utc>, DateTime<Utc>),
    pub status: RunStatus,
    pub dry_run: bool,
    /// The run's clusters, with `is_new`.
    pub clusters: &'a [ClusterSummary],
    /// Sample records of new clusters, by fingerprint, for the CIS rules.
    pub samples: &'a HashMap<String, Value>,
    /// Access keys with their last activity (this window's first).
    pub keys: &'a [AccessKeyView],
    /// Alerting state of each account before this run.
    pub previous: &'a HashMap<String, Value>,
    pub settings: &'a EventSettings,
    pub now: DateTime<Utc>,
}

/// What a run records: its events, the new alerting state per account, and a summary for the
/// run's report.
#[derive(Debug, Default)]
pub struct PlannedEvents {
    pub events: Vec<NewEvent>,
    pub dimensions: Vec<(String, Value)>,
    pub summary: Vec<RunEventSummary>,
}

/// Decides the events of one run: one per cloud account with new clusters, and a recovery
/// for each account whose fault this run ends.
pub fn plan(r: RunEvents<'_>) -> PlannedEvents {
    let previous: HashMap<String, DimensionState> =
        r.previous.iter().filter_map(|(k, v)| serde_json::from_value(v.clone()).ok().map(|s| (k.clone(), s))).collect();
    let mut accounts: BTreeSet<String> =
        r.clusters.iter().filter(|c| c.is_new).map(|c| c.identity.account_id.clone()).collect();
    accounts
        .extend(previous.iter().filter(|(_, s)| s.fault.is_some() || !s.carried.is_empty()).map(|(a, _)| a.clone()));

    let s = &r.inspection.settings;
    let ctx = event_context(&r);

    let mut out = PlannedEvents::default();
    let expires_at = r.now + TimeDelta::from_std(r.settings.expiry).unwrap_or(TimeDelta::hours(24));
    for account in accounts {
        let mine: Vec<&ClusterSummary> = r.clusters.iter().filter(|c| c.identity.account_id == account).collect();
        let new_clusters: Vec<EventCluster> = mine
            .iter()
            .filter(|c| c.is_new)
            .map(|c| EventCluster::from_summary(c, r.samples.get(&c.identity.fingerprint)))
            .collect();
        let run = AccountRun {
            account_id: account.clone(),
            new_error_records: mine.iter().filter(|c| c.is_new).map(|c| c.count).sum(),
            error_records: mine.iter().map(|c| c.count).sum(),
            access_keys: r.keys.iter().filter(|k| k.account_id == account).cloned().collect(),
            new_clusters,
        };
        // New clusters are a finding whatever else failed; silence is only a recovery when
        // every log group was read.
        let read_ok = !run.new_clusters.is_empty() || r.status == RunStatus::Succeeded;
        let prev = previous.get(&account).cloned().unwrap_or_default();
        let outcome = event::evaluate(&ctx, &run, &prev, &s.alert_policy, read_ok, r.now);
        if !r.dry_run {
            out.dimensions.push((account.clone(), serde_json::to_value(&outcome.decision.next).unwrap_or(Value::Null)));
        }
        let Some(ev) = outcome.event else { continue };
        let (state, note) = delivery_of(&r, &ev, &outcome.decision.silent_reason);
        out.summary.push(RunEventSummary {
            event_id: ev.event_id.clone(),
            account_id: account.clone(),
            status: ev.status.as_str().to_string(),
            is_silent: ev.is_silent,
            delivery_state: state,
            note: note.clone(),
        });
        out.events.push(NewEvent {
            id: Uuid::now_v7(),
            event_id: ev.event_id.clone(),
            account_id: account,
            status: ev.status.as_str().to_string(),
            is_silent: ev.is_silent,
            delivery_state: state,
            delivery_note: note,
            expires_at,
            fault_id: ev.fault.as_ref().map(|f| f.id.clone()),
            event: serde_json::to_value(&ev).unwrap_or(Value::Null),
        });
    }
    out
}

/// What every event of the run shares: the inspection, the window, the links.
fn event_context(r: &RunEvents<'_>) -> EventContext {
    let s = &r.inspection.settings;
    let region = if s.aws.region.is_empty() {
        r.clusters.iter().find(|c| c.is_new).map(|c| c.identity.region.clone()).unwrap_or_default()
    } else {
        s.aws.region.clone()
    };
    EventContext {
        inspection_id: r.inspection.id,
        inspection_name: r.inspection.name.clone(),
        run_id: r.run_id,
        ref_key: guance_ref_key(r.inspection.id),
        checker_name: r.inspection.name.clone(),
        checker_id: r.inspection.guance.checker_id.clone(),
        func_id: FUNC_ID.to_string(),
        region,
        log_groups: s.source.groups(&s.log_groups),
        window_start: r.window.0,
        window_end: r.window.1,
        exec_mode: r.exec_mode,
        alert_policy_ids: s.alert_policy.guance_alert_policy_uuids.clone(),
        public_url: r.settings.public_url.clone(),
        severity_rules: s.severity_rules.clone(),
    }
}

/// Whether an event goes to Guance, and a note: why not when it does not, why it is silent
/// when it is. A silent event goes to Guance like any other (`df_is_silent = "true"`): an
/// alert policy silences notifications, not the event history.
fn delivery_of(r: &RunEvents<'_>, ev: &GuanceEvent, silent: &Option<SilentReason>) -> (DeliveryState, Option<String>) {
    let silence = silent.as_ref().map(|reason| match reason {
        SilentReason::Silenced { until } => format!("silent (df_is_silent): silenced until {}", until.to_rfc3339()),
        SilentReason::LevelNotNotified { .. } => {
            format!("silent (df_is_silent): level {} is not in the alert policy's notify_levels", ev.status.as_str())
        }
    });
    if r.dry_run {
        (DeliveryState::NotSent, Some("not sent: dry run".to_string()))
    } else if !ev.deliver {
        (DeliveryState::NotSent, Some("not sent: recorded only".to_string()))
    } else if !r.settings.guance_configured {
        (DeliveryState::NotSent, Some(NOT_CONFIGURED.to_string()))
    } else {
        (DeliveryState::Pending, silence)
    }
}

/// The Guance side of the service: a client when configured, and the workers.
pub struct Guance {
    client: GuanceClient,
    /// Configured workspace token; otherwise fetched once and cached by the client.
    token: Option<Secret>,
    public_url: String,
    owner: String,
    /// First retry delay of a delivery; doubles per attempt, with jitter, up to 5 minutes.
    pub retry_base: Duration,
    /// How often the workers look for work.
    pub poll: Duration,
}

const MAX_RETRY: Duration = Duration::from_secs(300);
const BATCH: i64 = 50;

impl Guance {
    pub fn new(client: GuanceClient, token: Option<Secret>, public_url: String) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        Guance {
            client,
            token,
            public_url,
            owner: format!("{host}/{}", std::process::id()),
            retry_base: Duration::from_secs(5),
            poll: Duration::from_secs(2),
        }
    }

    fn backoff(&self, attempts: i32) -> TimeDelta {
        let exp = self.retry_base.saturating_mul(1u32 << attempts.clamp(0, 16) as u32).min(MAX_RETRY);
        let ms = exp.as_millis() as u64;
        let jittered = rand::rng().random_range(ms / 2..=ms.max(1));
        TimeDelta::milliseconds(jittered as i64)
    }

    async fn token(&self) -> Result<Secret, GuanceError> {
        match &self.token {
            Some(t) => Ok(t.clone()),
            None => self.client.workspace_token().await,
        }
    }

    /// Delivers what is due; returns how many events were sent.
    pub async fn deliver_once(&self, store: &DynStore) -> anyhow::Result<usize> {
        let now = time::now();
        let lease = now + TimeDelta::seconds(120);
        let batch = store.claim_events(&self.owner, now, lease, BATCH).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let mut lines = Vec::with_capacity(batch.len());
        let mut ready: Vec<&OutboxEvent> = Vec::with_capacity(batch.len());
        for e in &batch {
            if e.expires_at <= now {
                let error = "expired before Guance accepted it".to_string();
                store.finish_delivery(e.id, &DeliveryOutcome::Expired { error }, now).await?;
                continue;
            }
            match serde_json::from_value::<GuanceEvent>(e.event.clone()).map(|ev| ev.to_line_protocol()) {
                Ok(Ok(line)) => {
                    lines.push(line);
                    ready.push(e);
                }
                Ok(Err(err)) => {
                    let error = format!("cannot be written as line protocol: {err}");
                    store.finish_delivery(e.id, &DeliveryOutcome::Failed { error }, now).await?;
                }
                Err(err) => {
                    let error = format!("stored event is unreadable: {err}");
                    store.finish_delivery(e.id, &DeliveryOutcome::Failed { error }, now).await?;
                }
            }
        }
        if ready.is_empty() {
            return Ok(0);
        }
        let result = match self.token().await {
            Ok(token) => self.client.write_keyevents(&token, &lines.join("\n")).await,
            Err(e) => Err(e),
        };
        let done = time::now();
        match result {
            Ok(()) => {
                for e in &ready {
                    store.finish_delivery(e.id, &DeliveryOutcome::Sent, done).await?;
                }
                tracing::info!(events = ready.len(), "events delivered to Guance");
                Ok(ready.len())
            }
            Err(err) if err.is_retryable() => {
                tracing::warn!(events = ready.len(), error = %err, "Guance unavailable; events will be retried");
                for e in &ready {
                    let at = done + self.backoff(e.attempts);
                    let outcome = if at >= e.expires_at {
                        DeliveryOutcome::Expired { error: err.to_string() }
                    } else {
                        DeliveryOutcome::Retry { error: err.to_string(), at }
                    };
                    store.finish_delivery(e.id, &outcome, done).await?;
                }
                Ok(0)
            }
            Err(err) => {
                tracing::error!(events = ready.len(), error = %err, "Guance refused the events; not retrying");
                for e in &ready {
                    store.finish_delivery(e.id, &DeliveryOutcome::Failed { error: err.to_string() }, done).await?;
                }
                Ok(0)
            }
        }
    }

    /// The registration an inspection should have in Guance. `refFuncInfo.kwargs` describes
    /// the function's arguments as Guance lists them (`{"<arg>": {"default": …}}`, guance-docs
    /// `open-api/self-built-checker/list.md`), with the inspection's real `configs` as the
    /// default, so studio shows what is inspected and offers it for editing.
    pub fn checker_spec(&self, i: &Inspection) -> CheckerSpec {
        let groups = i.settings.source.groups(&i.settings.log_groups).join("\n");
        CheckerSpec {
            ref_key: guance_ref_key(i.id),
            title: i.name.clone(),
            ref_func_info: RefFuncInfo {
                func_id: FUNC_ID.to_string(),
                description: format!(
                    "AWS CloudTrail anomalous event inspection by cloudtrail-inspector ({}/api/v1/inspections/{})",
                    self.public_url, i.id
                ),
                definition:
                    "run(configs=None, lookback_minutes=None, window_start=None, window_end=None, dry_run=False)"
                        .to_string(),
                category: "selfBuiltCheck".to_string(),
                args: vec!["configs".into()],
                kwargs: serde_json::json!({ "configs": { "default": groups } }),
            },
            alert_policy_uuids: i.settings.alert_policy.guance_alert_policy_uuids.clone(),
            is_disabled: !i.enabled,
        }
    }

    /// Brings due registrations up to date; returns how many were handled.
    pub async fn sync_once(&self, store: &DynStore) -> anyhow::Result<usize> {
        let now = time::now();
        let jobs = store.claim_checker_jobs(now, now + TimeDelta::seconds(120), 20).await?;
        for job in &jobs {
            let result = match job.inspection_id {
                None => self.client.delete_checker(&job.ref_key).await.map(|()| CheckerOutcome::Deleted),
                Some(id) => match store.get_inspection(id).await? {
                    // Deleted between the claim and now: its row was orphaned; next pass deletes it.
                    None => continue,
                    Some(i) => self
                        .client
                        .upsert_checker(&self.checker_spec(&i))
                        .await
                        .map(|rec| CheckerOutcome::Synced { checker_id: Some(rec.uuid).filter(|u| !u.is_empty()) }),
                },
            };
            let done = time::now();
            let outcome = match result {
                Ok(o) => o,
                Err(err) => {
                    let retry_at =
                        done + if err.is_retryable() { self.backoff(job.attempts) } else { TimeDelta::hours(1) };
                    tracing::warn!(ref_key = %job.ref_key, error = %err, "could not sync the inspection with Guance");
                    CheckerOutcome::Failed { error: err.to_string(), retry_at }
                }
            };
            store.finish_checker_job(&job.ref_key, &outcome, done).await?;
        }
        Ok(jobs.len())
    }

    /// Runs delivery and registration until the process ends.
    pub fn spawn(self: Arc<Self>, store: DynStore) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.sync_once(&store).await {
                    tracing::warn!(error = format!("{e:#}"), "Guance registration pass failed");
                }
                // Drain: keep delivering while full batches go out.
                loop {
                    match self.deliver_once(&store).await {
                        Ok(n) if n as i64 >= BATCH => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = format!("{e:#}"), "Guance delivery pass failed");
                            break;
                        }
                    }
                }
            }
        })
    }
}
