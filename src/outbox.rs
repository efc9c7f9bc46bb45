//! From runs to Guance: which events a finished run records (planned here, written by the
//! store in the run's own transaction — an outbox), and the workers that deliver them and
//! keep each inspection and its registration in Guance in sync, both ways: what changes here
//! is pushed, what is edited in Guance studio is adopted (decided by [`crate::guance::sync`]),
//! before every run and every `pull_interval`.
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
use crate::guance::client::{CheckerRecord, CheckerSpec, GuanceClient, GuanceError, ModifyParts, RefFuncInfo};
use crate::guance::event::{self, AccountRun, EventCluster, EventContext, GuanceEvent};
use crate::guance::sync;
use crate::model::Secret;
use crate::model::alerting::AlertPolicy;
use crate::model::cluster::{AccessKeyView, ClusterSummary};
use crate::model::event::{DeliveryState, GuanceChange};
use crate::model::inspection::{Inspection, guance_ref_key, validate_log_groups};
use crate::model::run::{ExecMode, RunEventSummary, RunStatus};
use crate::model::time;
use crate::model::validation::FieldErrors;
use crate::store::{CheckerJob, CheckerOutcome, DeliveryOutcome, DynStore, NewEvent, OutboxEvent};

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
    /// Signs the console links of events (share links); None leaves them plain.
    pub share: Option<crate::share::ShareLinks>,
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
            share: None,
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
        share: r.settings.share.as_ref().map(|s| s.signer(r.now)),
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
    /// How often each registration is read back from Guance, to adopt edits made in studio.
    pub pull_interval: Duration,
    /// A registration read back less than this long ago is not read again before a run (a
    /// Func call reads it, then starts the run, which would read it again).
    pub pull_fresh: Duration,
}
/// How long a run waits for Guance's copy of its inspection before going on without it.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(5);

const MAX_RETRY: Duration = Duration::from_secs(300);
const BATCH: i64 = 50;

impl Guance {
    pub const DEFAULT_PULL_INTERVAL: Duration = Duration::from_secs(300);

    pub fn new(client: GuanceClient, token: Option<Secret>, public_url: String) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        Guance {
            client,
            token,
            public_url,
            owner: format!("{host}/{}", std::process::id()),
            retry_base: Duration::from_secs(5),
            poll: Duration::from_secs(2),
            pull_interval: Self::DEFAULT_PULL_INTERVAL,
            pull_fresh: Duration::from_secs(5),
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

    /// Brings due registrations up to date — pushes changes made here, adopts changes made in
    /// Guance studio, and reads every registration back once per `pull_interval` — and
    /// returns how many were handled.
    pub async fn sync_once(&self, store: &DynStore) -> anyhow::Result<usize> {
        let now = time::now();
        let pull_before = now - TimeDelta::from_std(self.pull_interval).unwrap_or(TimeDelta::minutes(5));
        let jobs = store.claim_checker_jobs(now, now + TimeDelta::seconds(120), 20, pull_before).await?;
        for job in &jobs {
            self.sync_job(store, job, now).await?;
        }
        Ok(jobs.len())
    }

    /// Reads one inspection's checker back from Guance now and adopts what changed there:
    /// before a run starts, so a run uses what studio last set. Skipped when it was read in
    /// the last few seconds or another worker is at it; bounded by [`PULL_TIMEOUT`], and a
    /// failure is the registration's (`failed`, retried), never the run's. Returns whether
    /// Guance was read.
    pub async fn pull(&self, store: &DynStore, inspection_id: Uuid) -> bool {
        let now = time::now();
        let fresh_after = now - TimeDelta::from_std(self.pull_fresh).unwrap_or(TimeDelta::seconds(5));
        let job = match store.claim_checker_pull(inspection_id, now, now + TimeDelta::seconds(120), fresh_after).await {
            Ok(Some(job)) => job,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(%inspection_id, error = %e, "could not claim the Guance registration to read it back");
                return false;
            }
        };
        match tokio::time::timeout(PULL_TIMEOUT, self.sync_job(store, &job, now)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(%inspection_id, error = format!("{e:#}"), "reading the inspection back from Guance failed");
                false
            }
            Err(_) => {
                tracing::warn!(%inspection_id, "Guance did not answer in time; the run goes on with the settings it has");
                let at = time::now() + self.backoff(job.attempts);
                let error = format!("Guance did not answer within {} s", PULL_TIMEOUT.as_secs());
                let _ =
                    store.finish_checker_job(&job.ref_key, &CheckerOutcome::Failed { error, retry_at: at }, at).await;
                false
            }
        }
    }

    /// One claimed registration, synced and finished.
    async fn sync_job(&self, store: &DynStore, job: &CheckerJob, started: DateTime<Utc>) -> anyhow::Result<()> {
        let result = match job.inspection_id {
            None => self.client.delete_checker(&job.ref_key).await.map(|()| CheckerOutcome::Deleted),
            Some(id) => match store.get_inspection(id).await? {
                // Deleted between the claim and now: its row was orphaned; next pass deletes it.
                None => return Ok(()),
                Some(i) => self.sync_inspection(store, &i, job, started).await,
            },
        };
        let done = time::now();
        let outcome = match result {
            Ok(o) => o,
            Err(err) => {
                let retry_at = done + if err.is_retryable() { self.backoff(job.attempts) } else { TimeDelta::hours(1) };
                tracing::warn!(ref_key = %job.ref_key, error = %err, "could not sync the inspection with Guance");
                CheckerOutcome::Failed { error: err.to_string(), retry_at }
            }
        };
        store.finish_checker_job(&job.ref_key, &outcome, done).await?;
        Ok(())
    }

    /// One inspection against its checker: read Guance's copy, adopt what changed there, push
    /// what changed here, and remember what both now hold (see [`crate::guance::sync`]).
    async fn sync_inspection(
        &self,
        store: &DynStore,
        inspection: &Inspection,
        job: &CheckerJob,
        started: DateTime<Utc>,
    ) -> Result<CheckerOutcome, GuanceError> {
        let memory: Option<sync::Memory> = job.memory.clone().and_then(|m| serde_json::from_value(m).ok());
        let local = shared_of(inspection);
        let record = self.client.get_checker(&job.ref_key).await?;
        let fallback = memory.as_ref().map_or(&local, |m| &m.seen);
        let remote = record
            .as_ref()
            .map(|r| sync::Remote { fields: sync::remote_fields(r, fallback), update_at: r.update_at() });
        let registered = memory.is_some() || job.checker_id.is_some();
        let plan = sync::plan(
            &sync::Local { fields: &local, title: &inspection.name, changed_at: inspection.updated_at },
            memory.as_ref(),
            remote.as_ref(),
            registered,
        );
        match (record, remote) {
            _ if plan.deleted_in_guance => {
                tracing::warn!(inspection = %inspection.name, ref_key = %job.ref_key, "the checker was deleted in Guance; the inspection is kept");
                Ok(CheckerOutcome::DeletedInGuance)
            }
            (Some(record), Some(remote)) if !plan.create => {
                self.update_checker(store, inspection, &plan, record, &remote, started).await
            }
            _ => {
                let spec = self.checker_spec(inspection);
                let rec = self.client.create_checker(&spec).await?;
                let seen = sync::remote_fields(&rec, &local);
                let memory = sync::Memory { agreed: local, title: spec.title, seen };
                Ok(synced(Some(rec.uuid).filter(|u| !u.is_empty()), &memory, started, None))
            }
        }
    }

    /// A registered checker brought in line: the plan's adoptions written here (those that
    /// pass the API's checks), its pushes sent, and Guance's copy read back to remember.
    async fn update_checker(
        &self,
        store: &DynStore,
        inspection: &Inspection,
        plan: &sync::Plan,
        record: CheckerRecord,
        remote: &sync::Remote,
        started: DateTime<Utc>,
    ) -> Result<CheckerOutcome, GuanceError> {
        let mut agreed = plan.result.clone().unwrap_or_else(|| shared_of(inspection));
        let mut current = inspection.clone();
        let mut note = None;
        if !plan.adopt.is_empty() {
            let adoption = self.adopt(store, inspection, plan, remote).await;
            for field in &adoption.rejected {
                // Ours stays; Guance's edit stays seen, so it is not judged again until it changes.
                agreed.set(*field, &shared_of(inspection));
            }
            note = adoption.note;
            match adoption.inspection {
                Some(adopted) => current = adopted,
                // Changed here meanwhile: decide again next pass, with both changes in view.
                None if adoption.rejected.len() < plan.adopt.len() => {
                    return Ok(CheckerOutcome::Retry { at: time::now() });
                }
                None => {}
            }
        }
        let spec = self.checker_spec(&current);
        let parts = ModifyParts {
            title: plan.push_title,
            func_info: plan.push.contains(&sync::Field::Configs),
            alert_policies: plan.push.contains(&sync::Field::AlertPolicies),
        };
        if parts.any() {
            self.client.modify_checker_parts(&spec, parts).await?;
        }
        if plan.push.contains(&sync::Field::Enabled) {
            if spec.is_disabled {
                self.client.disable_checker(&spec.ref_key).await?;
            } else {
                self.client.enable_checker(&spec.ref_key).await?;
            }
        }
        let seen_record = if plan.pushes() { self.client.get_checker(&spec.ref_key).await? } else { None };
        let seen_record = seen_record.unwrap_or(record);
        let memory =
            sync::Memory { agreed, title: spec.title.clone(), seen: sync::remote_fields(&seen_record, &remote.fields) };
        Ok(synced(Some(seen_record.uuid).filter(|u| !u.is_empty()), &memory, started, note))
    }

    /// Writes the fields the plan adopts from Guance into the inspection, each checked as the
    /// API checks its input; a field that fails is rejected (and said so in the note), the
    /// others adopted. `inspection` is None when nothing was written: all were rejected, or
    /// the inspection changed here meanwhile.
    async fn adopt(&self, store: &DynStore, i: &Inspection, plan: &sync::Plan, remote: &sync::Remote) -> Adoption {
        let mut settings = i.settings.clone();
        let mut enabled = i.enabled;
        let fields = &remote.fields;
        let (mut adopted, mut rejected, mut problems) = (Vec::new(), Vec::new(), Vec::new());
        for field in &plan.adopt {
            let mut errors = FieldErrors::default();
            match field {
                sync::Field::Configs if i.settings.source.files_path().is_some() => {
                    errors.add("configs", "is not used by an inspection that reads files (its `source.path` is)");
                }
                sync::Field::Configs if i.settings.source.names_its_groups() => {
                    errors.add("configs", "is not used by an inspection that reads S3 (its `source.bucket` is)");
                }
                sync::Field::Configs => validate_log_groups("configs", &fields.configs, &mut errors),
                sync::Field::AlertPolicies => {
                    let policy = AlertPolicy {
                        guance_alert_policy_uuids: fields.alert_policy_uuids.clone(),
                        ..AlertPolicy::default()
                    };
                    policy.validate(&mut errors);
                }
                sync::Field::Enabled => {}
            }
            match errors.into_result(()) {
                Ok(()) => {
                    adopted.push(*field);
                    match field {
                        sync::Field::Configs => settings.log_groups = fields.configs.clone(),
                        sync::Field::AlertPolicies => {
                            settings.alert_policy.guance_alert_policy_uuids = fields.alert_policy_uuids.clone()
                        }
                        sync::Field::Enabled => enabled = fields.enabled,
                    }
                }
                Err(e) => {
                    rejected.push(*field);
                    problems.extend(e.into_map().into_iter().map(|(k, v)| format!("{k} {}", v.join(", "))));
                }
            }
        }
        let note =
            (!problems.is_empty()).then(|| format!("an edit made in Guance was not adopted: {}", problems.join("; ")));
        if let Some(n) = &note {
            tracing::warn!(inspection = %i.name, reason = %n, "an edit made in Guance was not adopted");
        }
        if adopted.is_empty() {
            return Adoption { inspection: None, rejected, note };
        }
        let change = GuanceChange {
            at: time::now(),
            changed_by: "guance".into(),
            fields: adopted.iter().map(|f| f.as_str().to_string()).collect(),
            guance_updated_at: remote.update_at,
        };
        let stored = match store.adopt_from_guance(i.id, i.updated_at, enabled, &settings, &change).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(inspection = %i.name, error = %e, "a change made in Guance could not be stored");
                None
            }
        };
        if stored.is_some() {
            tracing::info!(
                inspection_id = %i.id, inspection = %i.name, changed_by = "guance",
                fields = ?change.fields, "adopted a change made in Guance studio"
            );
        }
        Adoption { inspection: stored, rejected, note }
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

/// What became of the edits made in Guance that a sync adopts.
struct Adoption {
    /// The inspection as stored with them; None when nothing was stored.
    inspection: Option<Inspection>,
    /// Fields whose edit could not be used.
    rejected: Vec<sync::Field>,
    /// Why, for the registration's `error`.
    note: Option<String>,
}

/// The fields an inspection shares with its checker, as this service holds them (a file
/// source shows its path as its `configs`, as the registration does).
fn shared_of(i: &Inspection) -> sync::Shared {
    sync::Shared {
        configs: i.settings.source.groups(&i.settings.log_groups),
        alert_policy_uuids: i.settings.alert_policy.guance_alert_policy_uuids.clone(),
        enabled: i.enabled,
    }
}

fn synced(
    checker_id: Option<String>,
    memory: &sync::Memory,
    started: DateTime<Utc>,
    note: Option<String>,
) -> CheckerOutcome {
    CheckerOutcome::Synced {
        checker_id,
        memory: serde_json::to_value(memory).expect("plain data serializes"),
        started,
        note,
    }
}
