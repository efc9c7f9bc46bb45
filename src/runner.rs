//! Runs inspections: decides each log group's window, reads it through a [`LogSource`],
//! clusters what it finds, tells new clusters from known ones and stores it all at once.
//!
//! Windows: a log group is read from where it was last read completely (its watermark) to
//! `now − delivery_delay`, so consecutive runs neither overlap nor leave gaps and late
//! CloudTrail deliveries are still seen. A group never read before starts at
//! `end − lookback` and first reads `baseline_days` before that, whose clusters become
//! known without being reported. A group that fails keeps its watermark; the next run reads
//! its window again. Explicit windows and dry runs move nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Duration as TimeDelta, DurationRound, Utc};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::engine::{Analysis, Cluster, Clusterer, ClustererConfig, IgnoreRules, KeyActivity};
use crate::metrics::{Metrics, RunFigures};
use crate::model::cluster::{AccessKeyView, ClusterSummary, Counted};
use crate::model::inspection::{Inspection, validate_log_groups};
use crate::model::run::{AccountSummary, LogGroupOutcome, Run, RunReport, RunRequest, RunStatus, Trigger};
use crate::model::time;
use crate::model::validation::FieldErrors;
use crate::outbox;
use crate::source::cloudwatch::CloudWatchSettings;
use crate::source::{LogSource, ReadNotes, SourceError, SourceFactory, Window};
use crate::store::{ClusterWrite, DynStore, FinishedRun, LogGroupState, NewRun, QueueRefused, StoreError};

/// Knobs of the run machinery. Tests shrink the timings; production uses the defaults.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub run_concurrency: usize,
    pub log_group_concurrency: usize,
    /// How CloudWatch Logs is called.
    pub cloudwatch: CloudWatchSettings,
    /// How often a running run proves it is alive.
    pub heartbeat_interval: Duration,
    /// A run whose heartbeat is older than this is taken to be dead (its process crashed).
    pub stale_after: Duration,
    /// How runs turn into Guance events.
    pub events: crate::outbox::EventSettings,
    /// This instance's id, the first part of the owner stored on its runs. None: a fresh id
    /// per process (tests, one-shot commands).
    pub instance_id: Option<String>,
}

impl RunnerSettings {
    pub const DEFAULT_RUN_CONCURRENCY: usize = 4;
    pub const DEFAULT_LOG_GROUP_CONCURRENCY: usize = 4;
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            run_concurrency: Self::DEFAULT_RUN_CONCURRENCY,
            log_group_concurrency: Self::DEFAULT_LOG_GROUP_CONCURRENCY,
            cloudwatch: CloudWatchSettings::default(),
            heartbeat_interval: Duration::from_secs(15),
            stale_after: Duration::from_secs(120),
            events: crate::outbox::EventSettings::default(),
            instance_id: None,
        }
    }
}

/// The longest explicit window a caller may ask for.
const MAX_EXPLICIT_WINDOW_DAYS: i64 = 31;
/// New clusters listed in a run's report (all of them are in `GET /runs/{id}/clusters`).
const REPORT_CLUSTERS: usize = 100;
/// Access keys listed in a run's report.
const REPORT_KEYS: usize = 50;
/// Top values kept per cluster across runs.
const TOP_K: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("inspection not found")]
    NotFound,
    #[error("inspection is disabled")]
    Disabled,
    #[error("a run of this inspection is already in progress: {run_id}")]
    Active { run_id: Uuid },
    #[error("invalid run request")]
    Invalid(FieldErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A queued run and the task executing it.
pub struct Started {
    pub run: Run,
    pub done: JoinHandle<Option<Run>>,
}

pub struct Runner {
    store: DynStore,
    sources: Arc<dyn SourceFactory>,
    settings: RunnerSettings,
    slots: Arc<Semaphore>,
    /// Runs this process holds, whose heartbeats it keeps fresh.
    active: Mutex<HashSet<Uuid>>,
    /// Stored on each run as its owner: `<instance id>/<host>/<pid>`.
    owner: String,
    /// `<instance id>/`: what every run of this instance's owner starts with.
    owner_prefix: String,
    metrics: Arc<Metrics>,
}

/// Why a run is marked interrupted at start-up: its process died (SIGKILL, OOM, power loss).
const DIED_REASON: &str = "the service process running it stopped (found when the instance started again); \
    its window is read again by the next run";
/// Why a run is marked interrupted at shutdown: it did not finish within the grace period.
const STOPPED_REASON: &str = "the service was stopped before the run could finish (shutdown grace period over); \
    its window is read again by the next run";

impl Runner {
    pub fn new(store: DynStore, sources: Arc<dyn SourceFactory>, settings: RunnerSettings) -> Arc<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        // Without a configured instance id every runner is an instance of its own, so its
        // start-up recovery can never touch another live process's runs.
        let instance = settings.instance_id.clone().unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        Arc::new(Runner {
            store,
            sources,
            slots: Arc::new(Semaphore::new(settings.run_concurrency.max(1))),
            settings,
            active: Mutex::new(HashSet::new()),
            owner: format!("{instance}/{host}/{}", std::process::id()),
            owner_prefix: format!("{instance}/"),
            metrics: Arc::new(Metrics::default()),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Marks runs that an earlier process of this instance left active as interrupted. Called
    /// once at start-up, before this process starts runs of its own: whatever is still
    /// active under this instance's id then belonged to a process that died, and waiting for
    /// its heartbeat to go stale would keep its inspections blocked (409) for minutes.
    pub async fn recover_own_runs(&self) -> Result<u64, StoreError> {
        let n = self.store.interrupt_owned_runs(&self.owner_prefix, time::now(), DIED_REASON).await?;
        if n > 0 {
            tracing::warn!(runs = n, "marked runs left behind by this instance's previous process as interrupted");
        }
        self.metrics.runs_interrupted(n);
        Ok(n)
    }

    /// Runs of this process that have not ended yet.
    pub fn active_runs(&self) -> usize {
        self.active.lock().expect("active lock").len()
    }

    /// Waits until this process has no run in progress.
    pub async fn wait_idle(&self) {
        while self.active_runs() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Marks this instance's runs still in progress as interrupted, for a shutdown that
    /// cannot wait any longer. Their results, should they still arrive, are dropped by
    /// `finish_run`, and their windows are read again by the next run.
    pub async fn interrupt_own_runs(&self) -> Result<u64, StoreError> {
        let n = self.store.interrupt_owned_runs(&self.owner_prefix, time::now(), STOPPED_REASON).await?;
        self.metrics.runs_interrupted(n);
        Ok(n)
    }

    pub fn settings(&self) -> &RunnerSettings {
        &self.settings
    }

    /// Keeps heartbeats of this process's runs fresh and declares other processes' dead runs
    /// interrupted. Runs until the process ends.
    pub fn spawn_housekeeping(self: &Arc<Self>) -> JoinHandle<()> {
        let runner = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(runner.settings.heartbeat_interval);
            loop {
                tick.tick().await;
                runner.housekeeping().await;
            }
        })
    }

    pub async fn housekeeping(&self) {
        let ids: Vec<Uuid> = self.active.lock().expect("active lock").iter().copied().collect();
        let now = time::now();
        if !ids.is_empty() {
            if let Err(e) = self.store.heartbeat(&ids, now).await {
                tracing::warn!(error = %e, "could not refresh run heartbeats");
            }
        }
        match self.store.interrupt_stale_runs(self.stale_before(now), now).await {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.runs_interrupted(n);
                tracing::warn!(runs = n, "marked runs of a stopped process as interrupted");
            }
            Err(e) => tracing::warn!(error = %e, "could not check for interrupted runs"),
        }
    }

    fn stale_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - TimeDelta::from_std(self.settings.stale_after).unwrap_or(TimeDelta::minutes(2))
    }

    /// Validates a run request against the inspection, queues the run and starts it.
    pub async fn trigger(
        self: &Arc<Self>,
        inspection_id: Uuid,
        trigger: Trigger,
        request: RunRequest,
        trace_id: Option<String>,
    ) -> Result<Started, TriggerError> {
        self.start(inspection_id, trigger, request, trace_id, true).await
    }

    /// Like [`Runner::trigger`], for the `scan` command: windows may be as long as the files
    /// go back, and may end in the future.
    pub async fn trigger_scan(
        self: &Arc<Self>,
        inspection_id: Uuid,
        request: RunRequest,
    ) -> Result<Started, TriggerError> {
        self.start(inspection_id, Trigger::Api, request, None, false).await
    }

    async fn start(
        self: &Arc<Self>,
        inspection_id: Uuid,
        trigger: Trigger,
        request: RunRequest,
        trace_id: Option<String>,
        limits: bool,
    ) -> Result<Started, TriggerError> {
        let inspection = self.store.get_inspection(inspection_id).await?.ok_or(TriggerError::NotFound)?;
        if !inspection.enabled {
            return Err(TriggerError::Disabled);
        }
        let request = validate_request(request, time::now(), limits).map_err(TriggerError::Invalid)?;
        let log_groups =
            inspection.settings.source.groups(request.log_groups.as_deref().unwrap_or(&inspection.settings.log_groups));
        let now = time::now();
        let new = NewRun {
            id: Uuid::now_v7(),
            inspection_id,
            trigger,
            trace_id,
            request,
            log_groups,
            owner: self.owner.clone(),
            created_at: now,
        };
        let run = match self.store.queue_run(&new, self.stale_before(now)).await? {
            Ok(run) => run,
            Err(QueueRefused::Active { run_id }) => return Err(TriggerError::Active { run_id }),
            Err(QueueRefused::InspectionMissing) => return Err(TriggerError::NotFound),
        };
        self.active.lock().expect("active lock").insert(run.id);
        tracing::info!(run_id = %run.id, inspection = %inspection.name, trigger = trigger.as_str(), "run queued");
        let runner = Arc::clone(self);
        let queued = run.clone();
        // Every line the run logs, down to the AWS retries, carries its id.
        let span = tracing::info_span!("run", run_id = %run.id, inspection_id = %inspection_id);
        let done = tokio::spawn(
            async move {
                let id = queued.id;
                let result = runner.execute(queued).await;
                runner.active.lock().expect("active lock").remove(&id);
                result
            }
            .instrument(span),
        );
        Ok(Started { run, done })
    }

    /// Executes a queued run to its end and returns it as stored.
    async fn execute(&self, run: Run) -> Option<Run> {
        let _slot = self.slots.clone().acquire_owned().await.ok()?;
        let run_id = run.id;
        let started = std::time::Instant::now();
        let failed = match self.execute_inner(&run).await {
            Ok(()) => false,
            Err(e) => {
                let now = time::now();
                // One line per failure: the reason, and whether it could be recorded.
                match self.store.fail_run(run_id, RunStatus::Failed, &format!("{e:#}"), &run.log_groups, now).await {
                    Ok(()) => tracing::error!(error = format!("{e:#}"), "run failed"),
                    Err(e2) => tracing::error!(
                        error = format!("{e:#}"),
                        store_error = %e2,
                        "run failed, and the failure could not be recorded"
                    ),
                }
                true
            }
        };
        let stored = self.store.get_run(run_id).await.ok().flatten();
        let status = match &stored {
            Some(r) => r.status,
            None if failed => RunStatus::Failed,
            None => return None,
        };
        if !matches!(status, RunStatus::Queued | RunStatus::Running) {
            let figures = stored.as_ref().map_or(RunFigures::default(), |r| RunFigures {
                records_scanned: r.records_scanned.max(0) as u64,
                error_records: r.error_records.max(0) as u64,
                malformed_records: r.malformed_records.max(0) as u64,
            });
            self.metrics.run_finished(status, started.elapsed(), figures);
        }
        stored
    }

    async fn execute_inner(&self, run: &Run) -> anyhow::Result<()> {
        let Some(inspection) = self.store.get_inspection(run.inspection_id).await? else {
            return Ok(()); // deleted meanwhile; its runs went with it
        };
        let now = time::now();
        let states: HashMap<String, LogGroupState> =
            self.store.log_group_states(inspection.id).await?.into_iter().map(|s| (s.log_group.clone(), s)).collect();
        let groups: Vec<String> = run.log_groups.iter().map(|g| g.name.clone()).collect();
        let plans: Vec<GroupPlan> =
            groups.iter().map(|g| plan_group(&inspection, &run.request, g, states.get(g), now)).collect();
        let window_start = plans.iter().map(|p| p.window.start).min().unwrap_or(now);
        let window_end = plans.iter().map(|p| p.window.end).max().unwrap_or(now);
        let skipped =
            plans.iter().filter_map(|p| p.skipped).fold(None, |acc: Option<(DateTime<Utc>, DateTime<Utc>)>, s| {
                Some(match acc {
                    None => s,
                    Some(a) => (a.0.min(s.0), a.1.max(s.1)),
                })
            });
        if !self.store.start_run(run.id, (window_start, window_end), skipped, now).await? {
            return Ok(()); // declared interrupted before it could start
        }
        tracing::info!(run_id = %run.id, inspection = %inspection.name, %window_start, %window_end, groups = groups.len(), "run started");

        if let (Some(e), Some(_)) = (&inspection.secrets_error, &inspection.settings.aws.access_key_id) {
            anyhow::bail!("{e}");
        }
        let source = match self.sources.for_inspection(&inspection).await {
            Ok(s) => s,
            Err(e) => anyhow::bail!("could not set up access to the log source: {e:#}"),
        };
        let ignore = IgnoreRules::new(
            &inspection.settings.ignore.error_codes,
            &inspection.settings.ignore.event_sources,
            &inspection.settings.ignore.principal_arns,
        )
        .map_err(|e| anyhow::anyhow!("invalid ignore rules: {e}"))?;

        let baseline_start = plans.iter().filter_map(|p| p.baseline.map(|b| b.start)).min();
        let results: Vec<GroupResult> = futures::stream::iter(plans)
            .map(|plan| read_group(source.as_ref(), plan, ignore.clone()))
            .buffered(self.settings.log_group_concurrency.max(1))
            .collect()
            .await;

        let every = source.sees_every_record();
        let mut merged = Clusterer::new(clusterer_config(ignore.clone(), every, None));
        let mut baseline = Clusterer::new(clusterer_config(ignore.clone(), every, None));
        let mut outcomes = Vec::with_capacity(results.len());
        let mut group_states = Vec::new();
        let mut read_ok = Vec::new();
        let mut failures = 0usize;
        let mut bad_files = 0u64;
        for r in results {
            let mut outcome = LogGroupOutcome {
                name: r.plan.group.clone(),
                status: "succeeded".into(),
                records_scanned: 0,
                error_records: 0,
                window_start: Some(r.plan.window.start),
                baseline_read: r.plan.baseline.is_some(),
                error: None,
                warnings: Vec::new(),
            };
            match r.result {
                Ok((c, b, notes)) => {
                    let stats = c.stats();
                    outcome.records_scanned = stats.records_scanned;
                    outcome.error_records = stats.error_records;
                    bad_files += notes.bad_files;
                    outcome.warnings = notes.problems;
                    merged.merge(c);
                    if let Some(b) = b {
                        baseline.merge(b);
                    }
                    if r.plan.moves_state && !run.request.dry_run {
                        let first_read = states.get(&r.plan.group).is_none_or(|st| st.baseline_until.is_none());
                        group_states.push(LogGroupState {
                            log_group: r.plan.group.clone(),
                            watermark: Some(r.plan.window.end),
                            // Set once, even when no baseline was asked for, so raising
                            // baseline_days later does not re-read history.
                            baseline_until: first_read.then_some(r.plan.window.start),
                        });
                    }
                    read_ok.push(r.plan.group.clone());
                }
                Err(e) => {
                    failures += 1;
                    // A group never read before keeps the window it failed on, so the next
                    // run starts there instead of at a later `now − lookback`.
                    if r.plan.moves_state && !run.request.dry_run && !states.contains_key(&r.plan.group) {
                        group_states.push(LogGroupState {
                            log_group: r.plan.group.clone(),
                            watermark: Some(r.plan.window.start),
                            baseline_until: None,
                        });
                    }
                    tracing::warn!(run_id = %run.id, log_group = %r.plan.group, error = %e, "log group could not be read");
                    outcome.status = "failed".into();
                    outcome.baseline_read = false;
                    outcome.error = Some(e.message.clone());
                }
            }
            outcomes.push(outcome);
        }

        let mut notes = Vec::new();
        if !read_ok.is_empty() {
            let key_window = Window { start: window_start, end: window_end };
            if let Err(e) = source.read_key_activity(&read_ok, key_window, &mut merged).await {
                tracing::warn!(run_id = %run.id, error = %e, "access-key activity could not be read");
                notes.push(format!("access-key activity could not be read: {e}"));
            }
            // A first run also learns when keys were last active before its window, so the
            // report can show a key that is idle this hour.
            if let Some(start) = baseline_start {
                let span = Window { start, end: window_start };
                if let Err(e) = source.read_key_activity(&read_ok, span, &mut baseline).await {
                    tracing::warn!(run_id = %run.id, error = %e, "access-key activity of the baseline could not be read");
                }
            }
        }
        let api_calls = source.counters().api_calls.load(std::sync::atomic::Ordering::Relaxed) as i64;
        self.metrics
            .aws_calls(api_calls as u64, source.counters().throttled.load(std::sync::atomic::Ordering::Relaxed));

        if bad_files > 0 {
            notes.push(format!("{bad_files} files could not be read (see log_groups[].warnings)"));
        }
        let status = if failures == outcomes.len() && !outcomes.is_empty() {
            RunStatus::Failed
        } else if failures > 0 || !notes.is_empty() {
            RunStatus::Partial
        } else {
            RunStatus::Succeeded
        };
        if failures > 0 {
            notes.insert(0, format!("{failures} of {} log groups could not be read", outcomes.len()));
        }

        let analysis = merged.finish();
        let baseline = baseline.finish();
        let finished = self
            .assemble(
                &inspection,
                run,
                analysis,
                baseline,
                Assembly {
                    status,
                    window: (window_start, window_end),
                    skipped,
                    outcomes,
                    group_states,
                    api_calls,
                    error: (!notes.is_empty()).then(|| notes.join("; ")),
                },
            )
            .await?;
        let (clusters_new, new_records) =
            (finished.run_clusters.iter().filter(|c| c.is_new).count(), finished.new_error_records);
        match self.store.finish_run(&finished).await {
            Ok(true) => {
                tracing::info!(
                    run_id = %run.id, inspection = %inspection.name, status = status.as_str(),
                    records = finished.records_scanned, errors = finished.error_records,
                    clusters = finished.run_clusters.len(), clusters_new, new_error_records = new_records,
                    aws_api_calls = api_calls, "run finished"
                );
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(run_id = %run.id, "run was declared interrupted by another process; its results were dropped");
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("could not store the run's results: {e}")),
        }
    }

    /// Turns what was read into the rows to store and the report to show.
    async fn assemble(
        &self,
        inspection: &Inspection,
        run: &Run,
        analysis: Analysis,
        baseline: Analysis,
        a: Assembly,
    ) -> anyhow::Result<FinishedRun> {
        let dry_run = run.request.dry_run;
        let mut fingerprints: Vec<String> = analysis.clusters.iter().map(|c| c.fingerprint.clone()).collect();
        fingerprints.extend(baseline.clusters.iter().map(|c| c.fingerprint.clone()));
        fingerprints.sort();
        fingerprints.dedup();
        let known = self.store.known_clusters(inspection.id, &fingerprints).await?;
        let baseline_fps: HashSet<&str> = baseline.clusters.iter().map(|c| c.fingerprint.as_str()).collect();

        let mut run_clusters = Vec::with_capacity(analysis.clusters.len());
        let mut writes = Vec::new();
        for c in &analysis.clusters {
            let prior = known.get(&c.fingerprint);
            let is_new = prior.is_none() && !baseline_fps.contains(c.fingerprint.as_str());
            let id = prior.map(|k| k.id).or_else(|| (!dry_run).then(Uuid::now_v7));
            let summary = ClusterSummary::from_cluster(c, id, is_new);
            if !dry_run {
                let (tp, ti, samples) = match prior {
                    Some(k) => (
                        merge_counted(&k.top_principals, &summary.top_principals),
                        merge_counted(&k.top_source_ips, &summary.top_source_ips),
                        k.sample_event_ids.clone(),
                    ),
                    None => (
                        summary.top_principals.clone(),
                        summary.top_source_ips.clone(),
                        summary.sample_event_ids.clone(),
                    ),
                };
                writes.push(ClusterWrite {
                    id: id.expect("non-dry runs give every cluster an id"),
                    summary: summary.clone(),
                    top_principals: tp,
                    top_source_ips: ti,
                    sample_event_ids: samples,
                    baseline: false,
                    sample_record: sample_json(c),
                });
            }
            run_clusters.push(summary);
        }
        let window_fps: HashSet<&str> = analysis.clusters.iter().map(|c| c.fingerprint.as_str()).collect();
        let mut baseline_new = 0i64;
        for c in &baseline.clusters {
            if known.contains_key(&c.fingerprint) || window_fps.contains(c.fingerprint.as_str()) {
                continue;
            }
            baseline_new += 1;
            if !dry_run {
                let summary = ClusterSummary::from_cluster(c, None, false);
                writes.push(ClusterWrite {
                    id: Uuid::now_v7(),
                    top_principals: summary.top_principals.clone(),
                    top_source_ips: summary.top_source_ips.clone(),
                    sample_event_ids: summary.sample_event_ids.clone(),
                    summary,
                    baseline: true,
                    sample_record: sample_json(c),
                });
            }
        }
        // A cluster seen in both the baseline and the window is known, not new, and counted
        // once per record: the baseline span ends where the window starts.
        for w in writes.iter_mut().filter(|w| !w.baseline) {
            if let Some(b) = baseline.clusters.iter().find(|b| b.fingerprint == w.summary.identity.fingerprint) {
                if !known.contains_key(&b.fingerprint) {
                    w.summary.count += b.count as i64;
                    w.summary.first_seen = w.summary.first_seen.min(b.first_seen);
                }
            }
        }

        let key_writes: Vec<AccessKeyView> =
            if dry_run { Vec::new() } else { analysis.keys.iter().chain(baseline.keys.iter()).map(key_view).collect() };

        let mut report = self.report(inspection, &a, &analysis, &run_clusters).await;
        // `run_clusters` holds one summary per cluster, in the same order.
        let samples: HashMap<String, serde_json::Value> = analysis
            .clusters
            .iter()
            .zip(&run_clusters)
            .filter(|(_, r)| r.is_new)
            .filter_map(|(c, _)| sample_json(c).map(|v| (c.fingerprint.clone(), v)))
            .collect();
        let previous = self.store.dimension_states(inspection.id).await?;
        let planned = outbox::plan(outbox::RunEvents {
            inspection,
            run_id: run.id,
            trigger: run.trigger,
            window: a.window,
            status: a.status,
            dry_run,
            clusters: &run_clusters,
            samples: &samples,
            keys: &report.access_keys,
            previous: &previous,
            settings: &self.settings.events,
            now: time::now(),
        });
        report.events = planned.summary;
        if !self.settings.events.guance_configured {
            report.events_note = Some(outbox::NOT_CONFIGURED.to_string());
        }
        let new_error_records = run_clusters.iter().filter(|c| c.is_new).map(|c| c.count).sum();
        let stats = analysis.stats;
        Ok(FinishedRun {
            run_id: run.id,
            inspection_id: inspection.id,
            status: a.status,
            window_start: Some(a.window.0),
            window_end: Some(a.window.1),
            skipped: a.skipped,
            finished_at: time::now(),
            records_scanned: stats.records_scanned as i64,
            error_records: stats.error_records as i64,
            malformed_records: stats.malformed_records as i64,
            ignored_records: stats.ignored_records as i64,
            new_error_records,
            baseline_clusters: baseline_new,
            aws_api_calls: a.api_calls,
            log_groups: a.outcomes,
            error: a.error,
            report: Some(report),
            run_clusters,
            cluster_writes: writes,
            key_writes,
            group_states: a.group_states,
            events: planned.events,
            dimensions: planned.dimensions,
        })
    }

    async fn report(
        &self,
        inspection: &Inspection,
        a: &Assembly,
        analysis: &Analysis,
        clusters: &[ClusterSummary],
    ) -> RunReport {
        let mut new_clusters: Vec<ClusterSummary> = clusters.iter().filter(|c| c.is_new).cloned().collect();
        new_clusters
            .sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.identity.fingerprint.cmp(&y.identity.fingerprint)));
        let truncated = new_clusters.len() > REPORT_CLUSTERS;
        new_clusters.truncate(REPORT_CLUSTERS);

        let mut accounts: BTreeMap<String, AccountSummary> = BTreeMap::new();
        for c in clusters {
            let acc = accounts.entry(c.identity.account_id.clone()).or_insert_with(|| AccountSummary {
                account_id: c.identity.account_id.clone(),
                ..AccountSummary::default()
            });
            acc.error_records += c.count;
            if c.is_new {
                acc.new_clusters += 1;
                acc.new_error_records += c.count;
            }
        }

        // Keys active in the window first, then the newest-known others, so a key idle this
        // hour still shows when it was last active.
        let mut keys: Vec<AccessKeyView> = analysis
            .keys
            .iter()
            .take(REPORT_KEYS)
            .map(|k| AccessKeyView { active_in_window: true, ..key_view(k) })
            .collect();
        if keys.len() < REPORT_KEYS {
            let seen: HashSet<String> = keys.iter().map(|k| k.access_key_id.clone()).collect();
            match self.store.list_access_keys(inspection.id, None, REPORT_KEYS as i64 * 2).await {
                Ok(stored) => keys.extend(
                    stored.into_iter().filter(|k| !seen.contains(&k.access_key_id)).take(REPORT_KEYS - keys.len()),
                ),
                Err(e) => tracing::warn!(error = %e, "could not read known access keys for the report"),
            }
        }

        RunReport {
            inspection_id: inspection.id,
            inspection: inspection.name.clone(),
            window_start: Some(a.window.0),
            window_end: Some(a.window.1),
            new_error_records: clusters.iter().filter(|c| c.is_new).map(|c| c.count).sum(),
            accounts: accounts.into_values().collect(),
            access_keys: keys,
            new_clusters,
            new_clusters_truncated: truncated,
            events: Vec::new(),
            events_note: None,
        }
    }
}

struct Assembly {
    status: RunStatus,
    window: (DateTime<Utc>, DateTime<Utc>),
    skipped: Option<(DateTime<Utc>, DateTime<Utc>)>,
    outcomes: Vec<LogGroupOutcome>,
    group_states: Vec<LogGroupState>,
    api_calls: i64,
    error: Option<String>,
}

/// What to read for one log group in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    pub group: String,
    pub window: Window,
    /// The span to read first so old errors become known, not new.
    pub baseline: Option<Window>,
    pub skipped: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Whether a successful read moves the group's watermark (default windows only).
    pub moves_state: bool,
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap_or(t)
}

/// Decides the window of one log group. Pure, so the rules are tested directly.
pub fn plan_group(
    inspection: &Inspection,
    request: &RunRequest,
    group: &str,
    state: Option<&LogGroupState>,
    now: DateTime<Utc>,
) -> GroupPlan {
    let s = &inspection.settings;
    let group = group.to_string();
    if let (Some(start), Some(end)) = (request.window_start, request.window_end) {
        return GroupPlan {
            group,
            window: Window { start: whole_seconds(start), end: whole_seconds(end) },
            baseline: None,
            skipped: None,
            moves_state: false,
        };
    }
    let end = whole_seconds(now - TimeDelta::minutes(s.delivery_delay_minutes as i64));
    let cap = TimeDelta::minutes(s.max_catch_up_minutes as i64);
    let mut skipped = None;
    let mut start = match state.and_then(|st| st.watermark) {
        Some(w) => w.min(end),
        None => end - TimeDelta::minutes(s.lookback_minutes as i64),
    };
    if end - start > cap {
        skipped = Some((start, end - cap));
        start = end - cap;
    }
    let baseline_due = s.baseline_days > 0 && state.is_none_or(|st| st.baseline_until.is_none());
    let baseline = baseline_due.then(|| Window { start: start - TimeDelta::days(s.baseline_days as i64), end: start });
    GroupPlan { group, window: Window { start, end }, baseline, skipped, moves_state: true }
}

struct GroupResult {
    plan: GroupPlan,
    result: Result<(Clusterer, Option<Clusterer>, ReadNotes), SourceError>,
}

/// A source that hands over every record lets the clusterer track keys and pick the window
/// by `eventTime`; CloudWatch already selected by time and error, and keys come separately.
fn clusterer_config(ignore: IgnoreRules, every_record: bool, window: Option<Window>) -> ClustererConfig {
    ClustererConfig {
        ignore,
        window: if every_record { window.map(|w| (w.start, w.end)) } else { None },
        track_keys: every_record,
        top_k: TOP_K,
        max_samples: 5,
    }
}

async fn read_group(source: &dyn LogSource, plan: GroupPlan, ignore: IgnoreRules) -> GroupResult {
    let every = source.sees_every_record();
    let result = async {
        let (baseline, baseline_notes) = match plan.baseline {
            Some(w) => {
                let mut b = Clusterer::new(clusterer_config(ignore.clone(), every, Some(w)));
                let n = source.read_errors(&plan.group, w, &mut b).await?;
                (Some(b), n)
            }
            None => (None, ReadNotes::default()),
        };
        let mut c = Clusterer::new(clusterer_config(ignore, every, Some(plan.window)));
        let mut notes = source.read_errors(&plan.group, plan.window, &mut c).await?;
        notes.absorb(baseline_notes);
        Ok((c, baseline, notes))
    }
    .await;
    GroupResult { plan, result }
}

/// Checks a run request on its own terms; the inspection's rules apply to `log_groups`.
pub fn validate_request(request: RunRequest, now: DateTime<Utc>, limits: bool) -> Result<RunRequest, FieldErrors> {
    let mut errors = FieldErrors::default();
    match (request.window_start, request.window_end) {
        (Some(start), Some(end)) => {
            if start >= end {
                errors.add("window_end", "must be after window_start");
            } else if limits && end - start > TimeDelta::days(MAX_EXPLICIT_WINDOW_DAYS) {
                errors.add("window_end", format!("a window can span at most {MAX_EXPLICIT_WINDOW_DAYS} days"));
            }
            if limits && end > now + TimeDelta::minutes(5) {
                errors.add("window_end", "must not be in the future");
            }
        }
        (Some(_), None) => errors.add("window_end", "is required with window_start"),
        (None, Some(_)) => errors.add("window_start", "is required with window_end"),
        (None, None) => {}
    }
    if let Some(groups) = &request.log_groups {
        validate_log_groups("log_groups", groups, &mut errors);
    }
    errors.into_result(request)
}

fn key_view(k: &KeyActivity) -> AccessKeyView {
    AccessKeyView {
        access_key_id: k.access_key_id.clone(),
        principal_arn: k.principal_arn.clone(),
        account_id: k.account_id.clone(),
        first_seen: time::micros(k.first_seen),
        last_seen: time::micros(k.last_seen),
        last_event_name: k.last_event_name.clone(),
        last_source_ip: k.last_source_ip.clone(),
        total_events: k.count as i64,
        active_in_window: false,
    }
}

fn sample_json(c: &Cluster) -> Option<serde_json::Value> {
    c.sample_record.as_deref().and_then(|r| serde_json::from_str(r).ok())
}

/// Adds two top lists and keeps the largest.
fn merge_counted(a: &[Counted], b: &[Counted]) -> Vec<Counted> {
    let mut all: BTreeMap<&str, u64> = BTreeMap::new();
    for v in a.iter().chain(b) {
        *all.entry(v.value.as_str()).or_default() += v.count;
    }
    let mut out: Vec<Counted> =
        all.into_iter().map(|(value, count)| Counted { value: value.to_string(), count }).collect();
    out.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.value.cmp(&y.value)));
    out.truncate(TOP_K);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inspection::{AwsSecrets, InspectionDraft, NewInspection};
    use chrono::TimeZone;

    fn inspection(json: serde_json::Value) -> Inspection {
        let input: NewInspection = serde_json::from_value(json).unwrap();
        let d = InspectionDraft::from_new(input).unwrap();
        Inspection {
            id: Uuid::nil(),
            name: d.name,
            description: d.description,
            enabled: d.enabled,
            settings: d.settings,
            secrets: AwsSecrets::default(),
            secrets_error: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            last_run: None,
            trigger_id: crate::model::Secret::new("t"),
            guance: crate::model::event::GuanceSync {
                state: "pending".into(),
                checker_id: None,
                ref_key: String::new(),
                error: None,
                synced_at: None,
            },
        }
    }

    fn base() -> Inspection {
        inspection(serde_json::json!({"name": "n", "log_groups": ["g"], "aws": {"region": "us-east-1"}}))
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap()
    }

    fn state(watermark: Option<DateTime<Utc>>, baseline_until: Option<DateTime<Utc>>) -> LogGroupState {
        LogGroupState { log_group: "g".into(), watermark, baseline_until }
    }

    #[test]
    fn first_run_reads_lookback_before_the_delivery_delay_and_a_baseline() {
        let p = plan_group(&base(), &RunRequest::default(), "g", None, at(12, 30, 15) + TimeDelta::milliseconds(700));
        assert_eq!(p.window, Window { start: at(11, 20, 15), end: at(12, 20, 15) });
        assert_eq!(p.baseline, Some(Window { start: at(11, 20, 15) - TimeDelta::days(7), end: at(11, 20, 15) }));
        assert!(p.moves_state);
        assert_eq!(p.skipped, None);
    }

    #[test]
    fn later_runs_start_at_the_watermark() {
        let st = state(Some(at(12, 0, 0)), Some(at(11, 0, 0)));
        let p = plan_group(&base(), &RunRequest::default(), "g", Some(&st), at(13, 10, 0));
        assert_eq!(p.window, Window { start: at(12, 0, 0), end: at(13, 0, 0) });
        assert_eq!(p.baseline, None);
    }

    #[test]
    fn a_long_pause_is_capped_and_the_gap_recorded() {
        let st = state(Some(at(0, 0, 0) - TimeDelta::days(3)), Some(at(0, 0, 0)));
        let p = plan_group(&base(), &RunRequest::default(), "g", Some(&st), at(12, 10, 0));
        assert_eq!(p.window, Window { start: at(12, 0, 0) - TimeDelta::hours(24), end: at(12, 0, 0) });
        assert_eq!(p.skipped, Some((at(0, 0, 0) - TimeDelta::days(3), at(12, 0, 0) - TimeDelta::hours(24))));
    }

    #[test]
    fn explicit_windows_move_nothing() {
        let req =
            RunRequest { window_start: Some(at(1, 0, 0)), window_end: Some(at(2, 0, 0)), ..RunRequest::default() };
        let p = plan_group(&base(), &req, "g", None, at(12, 0, 0));
        assert_eq!(p.window, Window { start: at(1, 0, 0), end: at(2, 0, 0) });
        assert!(!p.moves_state);
        assert_eq!(p.baseline, None);
    }

    #[test]
    fn a_group_that_failed_its_first_window_still_gets_its_baseline() {
        let st = state(Some(at(11, 0, 0)), None);
        let p = plan_group(&base(), &RunRequest::default(), "g", Some(&st), at(12, 10, 0));
        assert_eq!(p.window.start, at(11, 0, 0));
        assert_eq!(p.baseline.unwrap().end, at(11, 0, 0));
    }

    #[test]
    fn no_baseline_when_baseline_days_is_zero() {
        let i = inspection(
            serde_json::json!({"name": "n", "log_groups": ["g"], "aws": {"region": "us-east-1"}, "baseline_days": 0}),
        );
        assert_eq!(plan_group(&i, &RunRequest::default(), "g", None, at(12, 0, 0)).baseline, None);
    }

    #[test]
    fn run_requests_are_checked() {
        let now = at(12, 0, 0);
        let ok = RunRequest { window_start: Some(at(1, 0, 0)), window_end: Some(at(2, 0, 0)), ..RunRequest::default() };
        assert!(validate_request(ok, now, true).is_ok());
        let future =
            RunRequest { window_start: Some(at(1, 0, 0)), window_end: Some(at(13, 0, 0)), ..RunRequest::default() };
        assert!(validate_request(future.clone(), now, true).unwrap_err().fields().contains_key("window_end"));
        assert!(validate_request(future, now, false).is_ok(), "scans may end in the future");
        let long = RunRequest {
            window_start: Some(at(1, 0, 0) - TimeDelta::days(40)),
            window_end: Some(at(1, 0, 0)),
            ..RunRequest::default()
        };
        assert!(validate_request(long, now, true).is_err());
    }

    #[test]
    fn top_lists_merge_by_value() {
        let a = vec![Counted { value: "x".into(), count: 3 }, Counted { value: "y".into(), count: 1 }];
        let b = vec![Counted { value: "y".into(), count: 5 }];
        let m = merge_counted(&a, &b);
        assert_eq!(m[0], Counted { value: "y".into(), count: 6 });
        assert_eq!(m[1], Counted { value: "x".into(), count: 3 });
    }
}
