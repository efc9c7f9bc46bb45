//! Reading: everything a run learns from its log groups before it decides anything. Each
//! group's baseline span first (when it has one), then its window, then the access-key
//! activity of the groups that could be read.
//!
//! Then what the store knew before the run that its decision depends on ([`Prior`]), so that
//! the decision itself reads nothing.
//!
//! A group that cannot be read is not an error of the run: it is recorded with its reason,
//! and the decision of what that means is the assembly's. Only a source that cannot be used
//! at all (credentials, set-up, ignore rules) fails the run here.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use super::assemble::{Prior, REPORT_KEYS};
use super::plan::{GroupPlan, RunPlan};
use super::{Runner, TOP_K};
use crate::engine::{Analysis, Clusterer, ClustererConfig, IgnoreRules};
use crate::model::inspection::Inspection;
use crate::source::{LogSource, ReadNotes, SourceError, Window};
use crate::store::{LogGroupState, StoreError};

/// What a run read from its log groups.
#[derive(Debug)]
pub struct Reading {
    /// One per planned group, in the plan's order.
    pub groups: Vec<GroupRead>,
    /// The clusters and access keys of the window, across the groups that were read.
    pub analysis: Analysis,
    /// The same for the baseline spans.
    pub baseline: Analysis,
    /// Why the access-key activity of the window could not be read, if it could not.
    pub key_activity_error: Option<String>,
    pub api_calls: i64,
}

/// One log group's plan and what reading it gave: its figures, or why it could not be read.
#[derive(Debug)]
pub struct GroupRead {
    pub plan: GroupPlan,
    pub result: Result<GroupFigures, String>,
}

/// What a group that was read gave besides its clusters, which went into the run's.
#[derive(Debug, Clone, Default)]
pub struct GroupFigures {
    pub records_scanned: u64,
    pub error_records: u64,
    pub notes: ReadNotes,
}

type GroupResult = (GroupPlan, Result<(Clusterer, Option<Clusterer>, ReadNotes), SourceError>);

impl Runner {
    /// Reads every group of `plan` through the inspection's source, `log_group_concurrency`
    /// at a time.
    pub(super) async fn read_sources(
        &self,
        inspection: &Inspection,
        run_id: Uuid,
        plan: RunPlan,
    ) -> anyhow::Result<Reading> {
        // Never another identity instead: without its own credentials a run would read with
        // the service's default credential chain.
        if let Some(e) = &inspection.secrets_error {
            anyhow::bail!("{e}");
        }
        let source = match self.sources.for_inspection(inspection).await {
            Ok(s) => s,
            Err(e) => anyhow::bail!("could not set up access to the log source: {e:#}"),
        };
        let ignore = IgnoreRules::new(
            &inspection.settings.ignore.error_codes,
            &inspection.settings.ignore.event_sources,
            &inspection.settings.ignore.principal_arns,
        )
        .map_err(|e| anyhow::anyhow!("invalid ignore rules: {e}"))?;

        let (window, baseline_start) = (plan.window, plan.baseline_start());
        let results: Vec<GroupResult> = futures::stream::iter(plan.groups)
            .map(|plan| read_group(source.as_ref(), plan, ignore.clone()))
            .buffered(self.settings.log_group_concurrency.max(1))
            .collect()
            .await;

        let every = source.sees_every_record();
        let mut merged = Clusterer::new(clusterer_config(ignore.clone(), every, None, false));
        let mut baseline = Clusterer::new(clusterer_config(ignore, every, None, false));
        let mut groups = Vec::with_capacity(results.len());
        let mut read_ok = Vec::new();
        for (plan, result) in results {
            let result = match result {
                Ok((c, b, mut notes)) => {
                    let stats = c.stats();
                    notes.problems.extend(c.repair_summary());
                    merged.merge(c);
                    if let Some(b) = b {
                        baseline.merge(b);
                    }
                    read_ok.push(plan.group.clone());
                    Ok(GroupFigures {
                        records_scanned: stats.records_scanned,
                        error_records: stats.error_records,
                        notes,
                    })
                }
                Err(e) => {
                    tracing::warn!(run_id = %run_id, log_group = %plan.group, error = %e, "log group could not be read");
                    Err(e.message)
                }
            };
            groups.push(GroupRead { plan, result });
        }

        let key_activity_error =
            read_keys(source.as_ref(), run_id, &read_ok, window, baseline_start, (&mut merged, &mut baseline)).await;
        let api_calls = source.counters().api_calls.load(Ordering::Relaxed) as i64;
        self.metrics.aws_calls(&source.counters().calls.lock().unwrap_or_else(|e| e.into_inner()));

        Ok(Reading { groups, analysis: merged.finish(), baseline: baseline.finish(), key_activity_error, api_calls })
    }
}

impl Runner {
    /// What the store knew before the run, read once the log groups have been: the clusters
    /// to look up are the ones they gave. `group_states` were read when the run was planned.
    pub(super) async fn read_prior(
        &self,
        inspection_id: Uuid,
        reading: &Reading,
        group_states: HashMap<String, LogGroupState>,
    ) -> Result<Prior, StoreError> {
        let mut fingerprints: Vec<String> =
            reading.analysis.clusters.iter().chain(&reading.baseline.clusters).map(|c| c.fingerprint.clone()).collect();
        fingerprints.sort();
        fingerprints.dedup();
        let clusters = self.store.known_clusters(inspection_id, &fingerprints).await?;
        // The report lists the keys of the window first; known ones fill it up (and tell
        // whether any were left out when the window's fill it exactly).
        let mut access_keys = Vec::new();
        if reading.analysis.keys.len() <= REPORT_KEYS {
            match self.store.list_access_keys(inspection_id, None, REPORT_KEYS as i64 * 2).await {
                Ok(keys) => access_keys = keys,
                Err(e) => tracing::warn!(error = %e, "could not read known access keys for the report"),
            }
        }
        let dimensions = self.store.dimension_states(inspection_id).await?;
        Ok(Prior { group_states, clusters, access_keys, dimensions })
    }
}

/// Feeds the access-key activity of the groups that were read into the run's clusterers:
/// the window's, and for a first run the baseline span's as well, so the report can show a
/// key that is idle this hour. Returns why the window's could not be read.
async fn read_keys(
    source: &dyn LogSource,
    run_id: Uuid,
    groups: &[String],
    window: (DateTime<Utc>, DateTime<Utc>),
    baseline_start: Option<DateTime<Utc>>,
    (merged, baseline): (&mut Clusterer, &mut Clusterer),
) -> Option<String> {
    if groups.is_empty() {
        return None;
    }
    let mut error = None;
    if let Err(e) = source.read_key_activity(groups, Window { start: window.0, end: window.1 }, merged).await {
        tracing::warn!(run_id = %run_id, error = %e, "access-key activity could not be read");
        error = Some(e.to_string());
    }
    if let Some(start) = baseline_start {
        let span = Window { start, end: window.0 };
        if let Err(e) = source.read_key_activity(groups, span, baseline).await {
            tracing::warn!(run_id = %run_id, error = %e, "access-key activity of the baseline could not be read");
        }
    }
    error
}

/// A source that hands over every record lets the clusterer track keys and pick the window
/// by `eventTime`, unless its windows select files by delivery; CloudWatch already selected
/// by time and error, and keys come separately.
fn clusterer_config(
    ignore: IgnoreRules,
    every_record: bool,
    window: Option<Window>,
    by_delivery: bool,
) -> ClustererConfig {
    ClustererConfig {
        ignore,
        window: if every_record && !by_delivery { window.map(|w| (w.start, w.end)) } else { None },
        track_keys: every_record,
        top_k: TOP_K,
        max_samples: 5,
    }
}

async fn read_group(source: &dyn LogSource, plan: GroupPlan, ignore: IgnoreRules) -> GroupResult {
    let (every, by_delivery) = (source.sees_every_record(), source.selects_by_delivery());
    let result = async {
        let (baseline, baseline_notes) = match plan.baseline {
            Some(w) => {
                let mut b = Clusterer::new(clusterer_config(ignore.clone(), every, Some(w), by_delivery));
                let n = source.read_errors(&plan.group, w, &mut b).await?;
                (Some(b), n)
            }
            None => (None, ReadNotes::default()),
        };
        let mut c = Clusterer::new(clusterer_config(ignore, every, Some(plan.window), by_delivery));
        let mut notes = source.read_errors(&plan.group, plan.window, &mut c).await?;
        notes.absorb(baseline_notes);
        // A window without a single error is common; one without any record at all means
        // the trail is not delivering here, which the run should say.
        notes.window_empty = if c.stats().records_scanned > 0 {
            Some(false)
        } else if plan.window.is_empty() {
            None
        } else {
            source.window_has_records(&plan.group, plan.window).await.map(|has| !has)
        };
        Ok((c, baseline, notes))
    }
    .await;
    (plan, result)
}
