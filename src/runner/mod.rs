//! Runs inspections: turns a trigger into a run, and a run into stored results and events.
//!
//! # The order of a run
//!
//! 1. **Plan** (`plan`): from where each log group was last read completely (read from the
//!    store once), the window each group reads and whether it first reads a baseline. The
//!    run's span is stored as it starts.
//! 2. **Read** (`read`): each group's baseline span and window through its
//!    [`LogSource`](crate::source::LogSource), clustered by the engine, then the access-key
//!    activity; a group that cannot be read is recorded, not fatal. Then what the store
//!    knew that the decision depends on: the known clusters among those found, known access
//!    keys, each account's alerting state.
//! 3. **Assemble** (`assemble`): pure — no store, no source, no clock. It decides each
//!    group's outcome and new read position, the status, which clusters are new, the report
//!    and the events ([`outbox::plan`](crate::outbox::plan)), and returns them as one
//!    [`FinishedRun`](crate::store::FinishedRun). Its table tests are the reference for what
//!    "new" means.
//! 4. **Store** in one transaction: counters, clusters, keys, read positions, alerting
//!    state and the outgoing events commit together or not at all; no network I/O is left
//!    by then. A run declared interrupted meanwhile writes nothing.
//! 5. **Events**: delivered afterwards by the outbox workers, not by the runner.
//!
//! # What lives where
//!
//! - `mod.rs`: the [`Runner`], its settings and the errors of a trigger.
//! - `lifecycle`: triggering (validate, queue, spawn), executing within the run slots in
//!   the order above, heartbeats, and declaring runs interrupted — other processes' stale
//!   ones, and this instance's own at start-up ([`Runner::recover_own_runs`]) and shutdown.
//! - `plan`: [`plan_group`], the run's span, and [`validate_request`].
//! - `read`: the log groups through a source, and the store reads of step 2.
//! - `assemble`: the decision of step 3.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::model::run::Run;
use crate::model::validation::FieldErrors;
use crate::source::SourceFactory;
use crate::source::cloudwatch::CloudWatchSettings;
use crate::store::{DynStore, StoreError};

mod assemble;
mod lifecycle;
mod plan;
mod read;

pub use plan::{GroupPlan, plan_group, validate_request};

/// Knobs of the run machinery. Tests shrink the timings; production uses the defaults.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub run_concurrency: usize,
    pub log_group_concurrency: usize,
    /// How CloudWatch Logs is called.
    pub cloudwatch: CloudWatchSettings,
    /// How S3 is called.
    pub s3: crate::source::s3::S3Settings,
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
            s3: crate::source::s3::S3Settings::default(),
            heartbeat_interval: Duration::from_secs(15),
            stale_after: Duration::from_secs(120),
            events: crate::outbox::EventSettings::default(),
            instance_id: None,
        }
    }
}

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
    /// Guance, when configured: each run first reads its inspection back from Guance studio.
    guance: OnceLock<Arc<crate::outbox::Guance>>,
}

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
            guance: OnceLock::new(),
        })
    }

    /// Connects the runner to Guance: from now on every trigger first adopts what was changed
    /// in Guance studio (configs, alert policies, enabled) before judging and starting the
    /// run. Set once; later calls are ignored.
    pub fn attach_guance(&self, guance: Arc<crate::outbox::Guance>) {
        let _ = self.guance.set(guance);
    }

    /// Reads an inspection back from Guance studio now (see [`crate::outbox::Guance::pull`]);
    /// false when Guance is not configured or was not read.
    pub async fn pull_from_guance(&self, inspection_id: Uuid) -> bool {
        match self.guance.get() {
            Some(g) => g.pull(&self.store, inspection_id).await,
            None => false,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn settings(&self) -> &RunnerSettings {
        &self.settings
    }
}

#[cfg(test)]
mod fixtures;
