//! The life of runs in this process: triggering (validate, queue, spawn), executing a run
//! from plan to stored results within the run slots, keeping heartbeats fresh, and
//! declaring runs interrupted — other processes' stale ones, and this instance's own at
//! start-up and at a shutdown that cannot wait.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use super::assemble::{RunInputs, assemble};
use super::plan::{RunPlan, validate_request};
use super::{Runner, Started, TriggerError};
use crate::metrics::RunFigures;
use crate::model::inspection::Inspection;
use crate::model::run::{ExecMode, Run, RunRequest, RunStatus, Trigger};
use crate::model::time;
use crate::store::{FinishedRun, LogGroupState, NewRun, QueueRefused, StoreError};

/// How long the end of a run waits for an unreachable database before giving up (the run is
/// then left to the heartbeat timeout, as a run of a dead process would be).
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why a run is marked interrupted at start-up: its process died (SIGKILL, OOM, power loss).
const DIED_REASON: &str = "the service process running it stopped (found when the instance started again); \
    its window is read again by the next run";
/// Why a run is marked interrupted at shutdown: it did not finish within the grace period.
const STOPPED_REASON: &str = "the service was stopped before the run could finish (shutdown grace period over); \
    its window is read again by the next run";

impl Runner {
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
        self.start(inspection_id, Trigger::Cli, request, None, false).await
    }

    async fn start(
        self: &Arc<Self>,
        inspection_id: Uuid,
        trigger: Trigger,
        request: RunRequest,
        trace_id: Option<String>,
        limits: bool,
    ) -> Result<Started, TriggerError> {
        // What Guance studio changed wins before the run is judged: disabled there, it is not run.
        self.pull_from_guance(inspection_id).await;
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
                let reason = format!("{e:#}");
                let record = || self.store.fail_run(run_id, RunStatus::Failed, &reason, &run.log_groups, time::now());
                // One line per failure: the reason, and whether it could be recorded.
                match self.until_the_store_answers("the run's failure", record).await {
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

    /// A run from plan to stored results. Errors fail the run; a run whose inspection was
    /// deleted, or that another process declared interrupted, ends without them.
    async fn execute_inner(&self, run: &Run) -> anyhow::Result<()> {
        let Some(inspection) = self.store.get_inspection(run.inspection_id).await? else {
            return Ok(()); // deleted meanwhile; its runs went with it
        };
        let now = time::now();
        let states: HashMap<String, LogGroupState> =
            self.store.log_group_states(inspection.id).await?.into_iter().map(|s| (s.log_group.clone(), s)).collect();
        let groups: Vec<String> = run.log_groups.iter().map(|g| g.name.clone()).collect();
        let plan = RunPlan::new(&inspection, &run.request, &groups, &states, now);
        let ((window_start, window_end), skipped) = (plan.window, plan.skipped);
        if !self.store.start_run(run.id, (window_start, window_end), skipped, now).await? {
            return Ok(()); // declared interrupted before it could start
        }
        tracing::info!(run_id = %run.id, inspection = %inspection.name, %window_start, %window_end, groups = groups.len(), "run started");

        let reading = self.read_sources(&inspection, run.id, plan).await?;
        // What was read is complete: a database away for a while must not waste it.
        let prior = self
            .until_the_store_answers("the run's results", || self.read_prior(inspection.id, &reading, states.clone()))
            .await?;
        let finished = assemble(RunInputs {
            inspection: &inspection,
            run_id: run.id,
            exec_mode: ExecMode::of(run.trigger, run.request.exec_mode),
            dry_run: run.request.dry_run,
            window: (window_start, window_end),
            skipped,
            reading,
            prior,
            events: &self.settings.events,
            now: time::now(),
        });
        self.store_finished(&inspection, &finished).await
    }

    /// Calls the store for the end of a run, again and again while the database is
    /// unreachable (a restart, a failover), for up to [`STORE_PATIENCE`]: the run's outcome is
    /// recorded once it is back, rather than left `running` until another process declares
    /// it dead and calls it `interrupted`. Meanwhile the run stays this process's, so its
    /// heartbeat resumes with the database. Other errors are returned at once.
    async fn until_the_store_answers<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let give_up = tokio::time::Instant::now() + STORE_PATIENCE;
        let mut delay = std::time::Duration::from_millis(250);
        let mut waited = false;
        loop {
            match call().await {
                Err(e) if e.is_unavailable() && tokio::time::Instant::now() < give_up => {
                    if !waited {
                        tracing::warn!(error = %e, "the database is unavailable; {what} will be recorded when it is back");
                        waited = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                other => {
                    if waited && other.is_ok() {
                        tracing::info!("the database is back; {what} recorded");
                    }
                    return other;
                }
            }
        }
    }

    /// Writes a run's results, its events with them, in one transaction.
    async fn store_finished(&self, inspection: &Inspection, finished: &FinishedRun) -> anyhow::Result<()> {
        let run_id = finished.run_id;
        match self.until_the_store_answers("the run's results", || self.store.finish_run(finished)).await {
            Ok(true) => {
                let clusters_new = finished.run_clusters.iter().filter(|c| c.is_new).count();
                tracing::info!(
                    run_id = %run_id, inspection = %inspection.name, status = finished.status.as_str(),
                    records = finished.records_scanned, errors = finished.error_records,
                    clusters = finished.run_clusters.len(), clusters_new,
                    new_error_records = finished.new_error_records,
                    aws_api_calls = finished.aws_api_calls, "run finished"
                );
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(run_id = %run_id, "run was declared interrupted by another process; its results were dropped");
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("could not store the run's results: {e}")),
        }
    }
}
