//! The decision of a run, pure: from what it planned and read, and what the store knew
//! before it, to everything it writes — each log group's outcome and new read position, the
//! run's status, which clusters are new, its report and its events. No store, source or
//! clock here: all of it comes in as [`RunInputs`]; only new rows get fresh ids.
//!
//! - **New** is a cluster of the window that the inspection did not know and that the
//!   baseline did not see either. Only new clusters are reported and raise events.
//! - A cluster the **baseline** saw first becomes known without being reported, and is
//!   recorded as learned from the baseline, whether or not the window saw it too (so
//!   `new_since` never lists it). One seen by both counts its baseline records once (the
//!   baseline span ends where the window starts).
//! - A **known** cluster keeps its id; its top lists add up and its sample event ids stay.
//! - A log group that could not be read keeps its read position, so the next run reads its
//!   window again; one never read before is pinned to the window it failed on.
//! - The first window read of a group, default or explicit, records that its baseline was
//!   read (it ended where that window starts); only default windows move its watermark.
//! - A **dry run** computes and reports all of it but learns nothing: no cluster ids, no
//!   cluster, key, read position or alerting state written, and no event sent.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::TOP_K;
use super::read::{GroupRead, Reading};
use crate::engine::{Analysis, Cluster, Insight, KeyActivity, KeyTracker};
use crate::model::alerting::SeverityRules;
use crate::model::cluster::{AccessKeyView, ClusterSummary, merge_counted};
use crate::model::inspection::Inspection;
use crate::model::run::{AccountSummary, ExecMode, InsightView, LogGroupOutcome, RunReport, RunStatus};
use crate::model::time;
use crate::outbox::{self, EventSettings};
use crate::store::{ClusterWrite, FinishedRun, KnownCluster, LogGroupState};

/// New clusters listed in a run's report (all of them are in `GET /runs/{id}/clusters`).
const REPORT_CLUSTERS: usize = 100;
/// Access keys listed in a run's report.
pub const REPORT_KEYS: usize = 50;

/// Everything a finished run is made of, gathered before [`assemble`] decides anything.
pub struct RunInputs<'a> {
    pub inspection: &'a Inspection,
    pub run_id: Uuid,
    /// How the run was started, as its events tell Guance.
    pub exec_mode: ExecMode,
    pub dry_run: bool,
    /// The run's span, and the span it left unread (from its plan).
    pub window: (DateTime<Utc>, DateTime<Utc>),
    pub skipped: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub reading: Reading,
    pub prior: Prior,
    pub events: &'a EventSettings,
    /// When the run finishes: its `finished_at`, and the time its events are planned at.
    pub now: DateTime<Utc>,
}

/// What the store knew before the run, as far as the run's decision goes.
#[derive(Debug, Default)]
pub struct Prior {
    /// Where each log group had been read up to, by group.
    pub group_states: HashMap<String, LogGroupState>,
    /// The known clusters among those the run found (window and baseline), by fingerprint.
    pub clusters: HashMap<String, KnownCluster>,
    /// Known access keys, newest activity first (up to twice [`REPORT_KEYS`]), to fill a
    /// report whose window saw no more than [`REPORT_KEYS`] (empty otherwise).
    pub access_keys: Vec<AccessKeyView>,
    /// The alerting state of each cloud account (`guance::alerting::DimensionState` JSON).
    pub dimensions: HashMap<String, serde_json::Value>,
}

/// Decides a run's results from its inputs: the rows to store in one transaction with the
/// report and the events to record.
pub fn assemble(input: RunInputs<'_>) -> FinishedRun {
    let RunInputs { inspection, run_id, exec_mode, dry_run, window, skipped, reading, prior, events, now } = input;
    let groups = group_outcomes(reading.groups, &prior.group_states, (dry_run, now), reading.key_activity_error);
    let (analysis, baseline) = (reading.analysis, reading.baseline);
    let clusters = classify(&analysis, &baseline, &prior.clusters, &inspection.settings.severity_rules, dry_run);
    let key_writes = if dry_run { Vec::new() } else { key_writes(&analysis.keys, &baseline.keys) };

    let mut report = report(inspection, window, &analysis, &clusters.run, &prior.access_keys);
    // `clusters.run` holds one summary per cluster of the analysis, in the same order.
    let samples: HashMap<String, serde_json::Value> = analysis
        .clusters
        .iter()
        .zip(&clusters.run)
        .filter(|(_, r)| r.is_new)
        .filter_map(|(c, _)| sample_json(c).map(|v| (c.fingerprint.clone(), v)))
        .collect();
    let planned = outbox::plan(outbox::RunEvents {
        inspection,
        run_id,
        exec_mode,
        window,
        status: groups.status,
        dry_run,
        clusters: &clusters.run,
        samples: &samples,
        keys: &report.access_keys,
        previous: &prior.dimensions,
        settings: events,
        now,
    });
    report.events = planned.summary;
    if !events.guance_configured {
        report.events_note = Some(outbox::NOT_CONFIGURED.to_string());
    }
    report.warnings = groups.warnings;

    let stats = analysis.stats;
    FinishedRun {
        run_id,
        inspection_id: inspection.id,
        status: groups.status,
        window_start: Some(window.0),
        window_end: Some(window.1),
        skipped,
        finished_at: now,
        records_scanned: stats.records_scanned as i64,
        error_records: stats.error_records as i64,
        malformed_records: stats.malformed_records as i64,
        ignored_records: stats.ignored_records as i64,
        warned_records: stats.warned_records as i64,
        insight_events: stats.insight_events as i64,
        new_error_records: report.new_error_records,
        baseline_clusters: clusters.baseline_new,
        aws_api_calls: reading.api_calls,
        log_groups: groups.outcomes,
        error: groups.error,
        report: Some(report),
        run_clusters: clusters.run,
        cluster_writes: clusters.writes,
        key_writes,
        group_states: groups.states,
        events: planned.events,
        dimensions: planned.dimensions,
    }
}

/// What the reads of the log groups mean for the run.
struct GroupOutcomes {
    outcomes: Vec<LogGroupOutcome>,
    /// New read positions of groups.
    states: Vec<LogGroupState>,
    status: RunStatus,
    /// Why the run is not a full success, in a sentence per reason.
    error: Option<String>,
    /// For the report: what groups warned of without failing (an empty window), by name.
    warnings: Vec<String>,
}

/// A run is failed when no group could be read, partial when some could not or something
/// else was missed (key activity, files), succeeded otherwise.
fn group_outcomes(
    groups: Vec<GroupRead>,
    before: &HashMap<String, LogGroupState>,
    (dry_run, now): (bool, DateTime<Utc>),
    key_activity_error: Option<String>,
) -> GroupOutcomes {
    let total = groups.len();
    let mut outcomes = Vec::with_capacity(total);
    let mut states = Vec::new();
    let mut warnings = Vec::new();
    let (mut bad_files, mut unusable_rows) = (0u64, 0u64);
    for read in groups {
        bad_files += read.result.as_ref().map_or(0, |f| f.notes.bad_files);
        unusable_rows += read.result.as_ref().map_or(0, |f| f.notes.unusable_rows);
        let (outcome, state) = group_outcome(read, before, (dry_run, now));
        let empty = outcome.warnings.iter().filter(|w| w.starts_with(EMPTY_WINDOW));
        warnings.extend(empty.map(|w| format!("{}: {w}", outcome.name)));
        outcomes.push(outcome);
        states.extend(state);
    }

    let mut notes = Vec::new();
    let reasons: Vec<&str> = outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
    let failures = reasons.len();
    if let Some(first) = reasons.first() {
        // The reason itself, so the run says what to fix; each group has its own.
        let others = if reasons.iter().all(|r| r == first) { "" } else { " (others: see log_groups[].error)" };
        notes.push(format!("{failures} of {total} log groups could not be read{others}: {first}"));
    }
    if let Some(e) = key_activity_error {
        notes.push(format!("access-key activity could not be read: {e}"));
    }
    if bad_files > 0 {
        notes.push(format!("{bad_files} files could not be read (see log_groups[].warnings)"));
    }
    if unusable_rows > 0 {
        notes.push(format!(
            "{unusable_rows} Logs Insights rows lacked the fields the query asked for (see log_groups[].warnings)"
        ));
    }
    let status = if failures == total && total > 0 {
        RunStatus::Failed
    } else if !notes.is_empty() {
        RunStatus::Partial
    } else {
        RunStatus::Succeeded
    };
    GroupOutcomes { outcomes, states, status, error: (!notes.is_empty()).then(|| notes.join("; ")), warnings }
}

/// One group's outcome, and where it is to be read from next (None: where it was).
fn group_outcome(
    read: GroupRead,
    before: &HashMap<String, LogGroupState>,
    (dry_run, now): (bool, DateTime<Utc>),
) -> (LogGroupOutcome, Option<LogGroupState>) {
    let GroupRead { plan, result } = read;
    let prior = before.get(&plan.group);
    let mut idle = Idle::of(prior);
    let mut outcome = LogGroupOutcome {
        name: plan.group.clone(),
        status: "succeeded".into(),
        records_scanned: 0,
        error_records: 0,
        window_start: Some(plan.window.start),
        baseline_read: plan.baseline.is_some(),
        error: None,
        warnings: Vec::new(),
    };
    let state = match result {
        Ok(figures) => {
            outcome.records_scanned = figures.records_scanned;
            outcome.error_records = figures.error_records;
            outcome.warnings = figures.notes.problems;
            outcome.warnings.extend(idle.observe(figures.notes.window_empty, plan.moves_state, now));
            // Set once, by the first window of any kind that is read, even when no baseline
            // was asked for, so raising baseline_days later does not re-read history.
            let first_read = prior.is_none_or(|st| st.baseline_until.is_none());
            let baseline_until = first_read.then_some(plan.window.start);
            (!dry_run && (plan.moves_state || baseline_until.is_some())).then(|| LogGroupState {
                log_group: plan.group.clone(),
                watermark: plan.moves_state.then_some(plan.window.end),
                baseline_until,
                empty_windows: idle.empty_windows,
                empty_warned_at: idle.warned_at,
            })
        }
        Err(e) => {
            outcome.status = "failed".into();
            outcome.baseline_read = false;
            outcome.error = Some(e);
            // A group never read before keeps the window it failed on, so the next run
            // starts there instead of at a later `now − lookback`.
            let never_read = prior.is_none_or(|st| st.watermark.is_none());
            (plan.moves_state && !dry_run && never_read).then(|| LogGroupState {
                log_group: plan.group.clone(),
                watermark: Some(plan.window.start),
                baseline_until: None,
                empty_windows: idle.empty_windows,
                empty_warned_at: idle.warned_at,
            })
        }
    };
    (outcome, state)
}

/// The warning for a window that held no record at all. The original's FAQ answers "the
/// report has no anomaly analysis" with "check that the collector has data"; the run says it.
pub const EMPTY_WINDOW: &str = "no CloudTrail records in this window: is the trail delivering where this reads (log group, bucket prefix or directory)?";
/// Default windows in a row without a record after which a group is taken to be idle, and
/// warned about once a day instead of on every run.
pub const IDLE_AFTER_EMPTY_WINDOWS: i64 = 3;

/// A group's run of empty default windows, as stored with its read position.
struct Idle {
    empty_windows: i64,
    warned_at: Option<DateTime<Utc>>,
}

impl Idle {
    fn of(state: Option<&LogGroupState>) -> Idle {
        Idle { empty_windows: state.map_or(0, |s| s.empty_windows), warned_at: state.and_then(|s| s.empty_warned_at) }
    }

    /// Takes in whether the window was empty, and returns the warning to show, if any. An
    /// explicit window is always warned about and leaves the count alone: it is not the
    /// group's steady reading.
    fn observe(&mut self, window_empty: Option<bool>, moves_state: bool, now: DateTime<Utc>) -> Option<String> {
        match window_empty {
            None => None,
            Some(false) => {
                if moves_state {
                    (self.empty_windows, self.warned_at) = (0, None);
                }
                None
            }
            Some(true) if !moves_state => Some(EMPTY_WINDOW.to_string()),
            Some(true) => {
                self.empty_windows += 1;
                let idle = self.empty_windows > IDLE_AFTER_EMPTY_WINDOWS;
                if idle && self.warned_at.is_some_and(|at| now - at < chrono::TimeDelta::days(1)) {
                    return None;
                }
                self.warned_at = Some(now);
                Some(match self.empty_windows {
                    1 => EMPTY_WINDOW.to_string(),
                    n if n < IDLE_AFTER_EMPTY_WINDOWS => format!("{EMPTY_WINDOW} ({n} windows in a row)"),
                    n => format!("{EMPTY_WINDOW} ({n} windows in a row; said once a day while it stays so)"),
                })
            }
        }
    }
}

/// The run's clusters told new from known, and the rows that make them known.
struct Classified {
    /// One per cluster of the window, in the analysis's order.
    run: Vec<ClusterSummary>,
    /// Empty for a dry run.
    writes: Vec<ClusterWrite>,
    /// Clusters the baseline taught: not known before, now known without being reported,
    /// whether or not the window saw them too.
    baseline_new: i64,
}

fn classify(
    analysis: &Analysis,
    baseline: &Analysis,
    known: &HashMap<String, KnownCluster>,
    severity: &SeverityRules,
    dry_run: bool,
) -> Classified {
    let baseline_by_fp: HashMap<&str, &Cluster> =
        baseline.clusters.iter().map(|c| (c.fingerprint.as_str(), c)).collect();
    let mut run = Vec::with_capacity(analysis.clusters.len());
    let mut writes = Vec::new();
    for c in &analysis.clusters {
        let prior = known.get(&c.fingerprint);
        let also_baseline = baseline_by_fp.get(c.fingerprint.as_str()).copied();
        let is_new = prior.is_none() && also_baseline.is_none();
        let id = prior.map(|k| k.id).or_else(|| (!dry_run).then(Uuid::now_v7));
        let summary = ClusterSummary::from_cluster(c, id, is_new, severity);
        if !dry_run {
            let mut write = window_write(c, id.expect("non-dry runs give every cluster an id"), &summary, prior);
            // Seen in both the baseline and the window: learned from the baseline, not new, and
            // counted once per record, as the baseline span ends where the window starts.
            if let (Some(b), None) = (also_baseline, prior) {
                write.summary.count += b.count as i64;
                write.summary.first_seen = write.summary.first_seen.min(b.first_seen);
                write.baseline = true;
            }
            writes.push(write);
        }
        run.push(summary);
    }

    let window_fps: HashSet<&str> = analysis.clusters.iter().map(|c| c.fingerprint.as_str()).collect();
    let mut baseline_new = 0i64;
    for c in &baseline.clusters {
        if known.contains_key(&c.fingerprint) {
            continue;
        }
        baseline_new += 1;
        if !dry_run && !window_fps.contains(c.fingerprint.as_str()) {
            let summary = ClusterSummary::from_cluster(c, None, false, severity);
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
    Classified { run, writes, baseline_new }
}

/// The row of a window's cluster: a known one adds its top lists to the stored ones and
/// keeps its stored samples.
fn window_write(c: &Cluster, id: Uuid, summary: &ClusterSummary, prior: Option<&KnownCluster>) -> ClusterWrite {
    let (top_principals, top_source_ips, sample_event_ids) = match prior {
        Some(k) => (
            merge_counted(&k.top_principals, &summary.top_principals, TOP_K),
            merge_counted(&k.top_source_ips, &summary.top_source_ips, TOP_K),
            k.sample_event_ids.clone(),
        ),
        None => (summary.top_principals.clone(), summary.top_source_ips.clone(), summary.sample_event_ids.clone()),
    };
    ClusterWrite {
        id,
        summary: summary.clone(),
        top_principals,
        top_source_ips,
        sample_event_ids,
        baseline: false,
        sample_record: sample_json(c),
    }
}

/// The run's report, without its events (planned from it).
fn report(
    inspection: &Inspection,
    window: (DateTime<Utc>, DateTime<Utc>),
    analysis: &Analysis,
    clusters: &[ClusterSummary],
    stored_keys: &[AccessKeyView],
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

    let (access_keys, access_keys_truncated) = report_keys(&analysis.keys, stored_keys);

    RunReport {
        inspection_id: inspection.id,
        inspection: inspection.name.clone(),
        window_start: Some(window.0),
        window_end: Some(window.1),
        new_error_records: clusters.iter().filter(|c| c.is_new).map(|c| c.count).sum(),
        accounts: accounts.into_values().collect(),
        access_keys,
        access_keys_active: analysis.keys.len() as i64,
        access_keys_truncated,
        new_clusters,
        new_clusters_truncated: truncated,
        insights: analysis.insights.iter().map(insight_view).collect(),
        events: Vec::new(),
        events_note: None,
        warnings: Vec::new(),
    }
}

/// The keys a report lists: those active in the window first, then the newest-known others,
/// so a key idle this hour still shows when it was last active; and whether any key active
/// or known was left out. `stored` holds twice as many keys as a report lists, so whether
/// others are left out is known exactly.
fn report_keys(window: &[KeyActivity], stored: &[AccessKeyView]) -> (Vec<AccessKeyView>, bool) {
    let mut keys: Vec<AccessKeyView> =
        window.iter().take(REPORT_KEYS).map(|k| AccessKeyView { active_in_window: true, ..key_view(k) }).collect();
    let active: HashSet<&str> = window.iter().map(|k| k.access_key_id.as_str()).collect();
    let mut others = stored.iter().filter(|k| !active.contains(k.access_key_id.as_str())).peekable();
    while keys.len() < REPORT_KEYS {
        match others.next() {
            Some(k) => keys.push(k.clone()),
            None => break,
        }
    }
    let truncated = window.len() > REPORT_KEYS || others.peek().is_some();
    (keys, truncated)
}

/// The activity of each key the window or the baseline saw, once per key: one statement
/// writes them all, and a key active in both would be written twice.
fn key_writes(window: &[KeyActivity], baseline: &[KeyActivity]) -> Vec<AccessKeyView> {
    let mut keys = KeyTracker::new();
    for k in window.iter().chain(baseline) {
        keys.observe_activity(k.clone());
    }
    keys.into_vec().iter().map(key_view).collect()
}

fn insight_view(i: &Insight) -> InsightView {
    InsightView {
        event_time: time::micros(i.event_time),
        account_id: i.account_id.clone(),
        region: i.region.clone(),
        state: i.state.clone(),
        insight_type: i.insight_type.clone(),
        event_source: i.event_source.clone(),
        event_name: i.event_name.clone(),
        error_code: i.error_code.clone(),
        baseline_average: i.baseline_average,
        insight_average: i.insight_average,
        event_id: i.event_id.clone(),
    }
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

#[cfg(test)]
mod tests {
    use chrono::Duration as TimeDelta;

    use super::*;
    use crate::engine::{ClusterKey, Counted, Stats};
    use crate::guance::alerting::{DimensionState, OpenFault};
    use crate::guance::event::EventStatus;
    use crate::model::event::DeliveryState;
    use crate::model::run::RunRequest;
    use crate::runner::fixtures::{at, base};
    use crate::runner::plan::{GroupPlan, RunPlan};
    use crate::runner::read::GroupFigures;
    use crate::source::ReadNotes;

    /// The cloud account every cluster of these tests is in.
    const ACCOUNT: &str = "111111111111";
    const ALICE: &str = "arn:aws:iam::111111111111:user/alice";

    fn now() -> DateTime<Utc> {
        at(12, 10, 0)
    }

    /// Where a log group had been read up to before the run.
    #[derive(Clone, Copy)]
    enum Before {
        Never,
        /// Its first window failed: pinned there, no baseline read yet.
        FailedFirstWindow,
        Read,
    }

    #[derive(Clone, Copy)]
    enum Reads {
        Ok,
        Failed,
        /// Read, but this many files of it could not be.
        BadFiles(u64),
    }

    /// The alerting state of the account before the run.
    #[derive(Clone, Copy)]
    enum Previous {
        Nothing,
        /// A fault is open; its last event (a warning) was sent this long ago.
        FaultSentMinutesAgo(i64),
    }

    /// What a cluster row is.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Row {
        /// A cluster of the window, first seen in it.
        Window,
        /// A cluster of the window that its baseline saw first.
        WindowSeenInBaseline,
        /// A cluster only the baseline saw.
        Baseline,
    }

    /// Where a group's new read position is, relative to the window it was planned.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mark {
        /// Read: after its window.
        End,
        /// Never read and failed: pinned to the start of the window it failed on.
        Start,
        /// An explicit window: the watermark stays where it was.
        Kept,
    }

    struct Case {
        name: &'static str,
        dry_run: bool,
        explicit_window: bool,
        groups: &'static [(&'static str, Before, Reads)],
        /// Clusters by error code, with their record counts.
        window: &'static [(&'static str, u64)],
        baseline: &'static [(&'static str, u64)],
        /// Error codes of the clusters the inspection already knew.
        known: &'static [&'static str],
        key_activity_failed: bool,
        previous: Previous,
        expect: Expect,
    }

    struct Expect {
        status: RunStatus,
        /// Error codes of the new clusters, in the analysis's order.
        new: &'static [&'static str],
        writes: &'static [(&'static str, i64, Row)],
        baseline_clusters: i64,
        /// New read positions: group, where, whether `baseline_until` is set.
        states: &'static [(&'static str, Mark, bool)],
        /// Events recorded: `df_status`, delivery state, silent.
        events: &'static [(&'static str, DeliveryState, bool)],
        /// Alerting states written: account, whether a fault is open, clusters carried.
        dimensions: &'static [(&'static str, bool, usize)],
        error: Option<&'static str>,
    }

    const ONE_GROUP_READ: &[(&str, Before, Reads)] = &[("g", Before::Read, Reads::Ok)];
    const FIRST_RUN: &[(&str, Before, Reads)] = &[("g", Before::Never, Reads::Ok)];

    /// A run that reads its one log group, finds nothing and knows of no fault: each case says
    /// how it differs.
    fn quiet() -> Case {
        Case {
            name: "quiet",
            dry_run: false,
            explicit_window: false,
            groups: ONE_GROUP_READ,
            window: &[],
            baseline: &[],
            known: &[],
            key_activity_failed: false,
            previous: Previous::Nothing,
            expect: Expect {
                status: RunStatus::Succeeded,
                new: &[],
                writes: &[],
                baseline_clusters: 0,
                states: &[("g", Mark::End, false)],
                events: &[],
                dimensions: &[],
                error: None,
            },
        }
    }

    fn cases() -> Vec<Case> {
        use DeliveryState::{NotSent, Pending};
        let quiet = quiet();
        vec![
            Case {
                name: "a first run reports what neither the store nor the baseline knew",
                groups: FIRST_RUN,
                window: &[("NoSuchKey", 3)],
                expect: Expect {
                    new: &["NoSuchKey"],
                    writes: &[("NoSuchKey", 3, Row::Window)],
                    states: &[("g", Mark::End, true)],
                    events: &[("warning", Pending, false)],
                    dimensions: &[(ACCOUNT, true, 0)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a dry run reports the same and learns nothing",
                dry_run: true,
                groups: FIRST_RUN,
                window: &[("NoSuchKey", 3)],
                baseline: &[("NoSuchBucket", 1)],
                expect: Expect {
                    new: &["NoSuchKey"],
                    baseline_clusters: 1,
                    states: &[],
                    events: &[("warning", NotSent, false)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a cluster seen in the baseline and in the window is known, not new, and counted once",
                groups: FIRST_RUN,
                window: &[("NoSuchKey", 3)],
                baseline: &[("NoSuchKey", 4)],
                expect: Expect {
                    writes: &[("NoSuchKey", 7, Row::WindowSeenInBaseline)],
                    baseline_clusters: 1,
                    states: &[("g", Mark::End, true)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a cluster only the baseline saw becomes known without being reported",
                groups: FIRST_RUN,
                baseline: &[("NoSuchBucket", 2)],
                expect: Expect {
                    writes: &[("NoSuchBucket", 2, Row::Baseline)],
                    baseline_clusters: 1,
                    states: &[("g", Mark::End, true)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a known cluster is not new and keeps its row",
                window: &[("NoSuchKey", 3), ("Throttling", 1)],
                known: &["NoSuchKey"],
                expect: Expect {
                    new: &["Throttling"],
                    writes: &[("NoSuchKey", 3, Row::Window), ("Throttling", 1, Row::Window)],
                    events: &[("warning", Pending, false)],
                    dimensions: &[(ACCOUNT, true, 0)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a known cluster the baseline saw too is counted from the window only",
                groups: &[("g", Before::FailedFirstWindow, Reads::Ok)],
                window: &[("NoSuchKey", 3)],
                baseline: &[("NoSuchKey", 4)],
                known: &["NoSuchKey"],
                expect: Expect {
                    writes: &[("NoSuchKey", 3, Row::Window)],
                    states: &[("g", Mark::End, true)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a group that fails keeps its watermark and makes the run partial",
                groups: &[("a", Before::Read, Reads::Ok), ("b", Before::Read, Reads::Failed)],
                window: &[("NoSuchKey", 3)],
                expect: Expect {
                    status: RunStatus::Partial,
                    new: &["NoSuchKey"],
                    writes: &[("NoSuchKey", 3, Row::Window)],
                    states: &[("a", Mark::End, false)],
                    events: &[("warning", Pending, false)],
                    dimensions: &[(ACCOUNT, true, 0)],
                    error: Some(
                        "1 of 2 log groups could not be read: ResourceNotFoundException: The specified log group does not exist.",
                    ),
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a group that fails its first window is pinned to it",
                groups: &[("a", Before::Read, Reads::Ok), ("b", Before::Never, Reads::Failed)],
                expect: Expect {
                    status: RunStatus::Partial,
                    states: &[("a", Mark::End, false), ("b", Mark::Start, false)],
                    error: Some(
                        "1 of 2 log groups could not be read: ResourceNotFoundException: The specified log group does not exist.",
                    ),
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a group that failed its first window before gets its baseline mark when read",
                groups: &[("g", Before::FailedFirstWindow, Reads::Ok)],
                expect: Expect { states: &[("g", Mark::End, true)], ..quiet.expect },
                ..quiet
            },
            Case {
                name: "a run whose every group fails is failed and moves nothing",
                groups: &[("a", Before::Read, Reads::Failed), ("b", Before::FailedFirstWindow, Reads::Failed)],
                expect: Expect {
                    status: RunStatus::Failed,
                    states: &[],
                    error: Some(
                        "2 of 2 log groups could not be read: ResourceNotFoundException: The specified log group does not exist.",
                    ),
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a dry run pins no group that fails",
                dry_run: true,
                groups: &[("g", Before::Never, Reads::Failed)],
                expect: Expect {
                    status: RunStatus::Failed,
                    states: &[],
                    error: Some(
                        "1 of 1 log groups could not be read: ResourceNotFoundException: The specified log group does not exist.",
                    ),
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "an explicit window learns clusters but moves no watermark",
                explicit_window: true,
                window: &[("NoSuchKey", 3)],
                expect: Expect {
                    new: &["NoSuchKey"],
                    writes: &[("NoSuchKey", 3, Row::Window)],
                    states: &[],
                    events: &[("warning", Pending, false)],
                    dimensions: &[(ACCOUNT, true, 0)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "an explicit first window reads the baseline first and records it, not a watermark",
                explicit_window: true,
                groups: FIRST_RUN,
                window: &[("NoSuchKey", 3), ("Throttling", 1)],
                baseline: &[("NoSuchKey", 4)],
                expect: Expect {
                    new: &["Throttling"],
                    writes: &[("NoSuchKey", 7, Row::WindowSeenInBaseline), ("Throttling", 1, Row::Window)],
                    baseline_clusters: 1,
                    states: &[("g", Mark::Kept, true)],
                    events: &[("warning", Pending, false)],
                    dimensions: &[(ACCOUNT, true, 0)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "an explicit dry first window reads the baseline and records nothing",
                explicit_window: true,
                dry_run: true,
                groups: FIRST_RUN,
                window: &[("NoSuchKey", 3)],
                baseline: &[("NoSuchKey", 4)],
                expect: Expect { baseline_clusters: 1, states: &[], ..quiet.expect },
                ..quiet
            },
            Case {
                name: "key activity or files left unread make the run partial, and the group still moves",
                groups: &[("g", Before::Read, Reads::BadFiles(2))],
                key_activity_failed: true,
                expect: Expect {
                    status: RunStatus::Partial,
                    error: Some(
                        "access-key activity could not be read: AccessDeniedException; \
                         2 files could not be read (see log_groups[].warnings)",
                    ),
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "within the silence a new cluster is sent silent and carried",
                window: &[("NoSuchKey", 3)],
                previous: Previous::FaultSentMinutesAgo(10),
                expect: Expect {
                    new: &["NoSuchKey"],
                    writes: &[("NoSuchKey", 3, Row::Window)],
                    events: &[("warning", Pending, true)],
                    dimensions: &[(ACCOUNT, true, 1)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "after the silence a new cluster is sent again",
                window: &[("NoSuchKey", 3)],
                previous: Previous::FaultSentMinutesAgo(90),
                expect: Expect {
                    new: &["NoSuchKey"],
                    writes: &[("NoSuchKey", 3, Row::Window)],
                    events: &[("warning", Pending, false)],
                    dimensions: &[(ACCOUNT, true, 0)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a quiet run that read everything recovers an open fault",
                previous: Previous::FaultSentMinutesAgo(10),
                expect: Expect {
                    events: &[("ok", Pending, false)],
                    dimensions: &[(ACCOUNT, false, 0)],
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a quiet run that missed a group concludes nothing about an open fault",
                groups: &[("a", Before::Read, Reads::Ok), ("b", Before::Read, Reads::Failed)],
                previous: Previous::FaultSentMinutesAgo(10),
                expect: Expect {
                    status: RunStatus::Partial,
                    states: &[("a", Mark::End, false)],
                    dimensions: &[(ACCOUNT, true, 0)],
                    error: Some(
                        "1 of 2 log groups could not be read: ResourceNotFoundException: The specified log group does not exist.",
                    ),
                    ..quiet.expect
                },
                ..quiet
            },
            Case {
                name: "a dry run during a fault records its event unsent and keeps the alerting state",
                dry_run: true,
                window: &[("NoSuchKey", 3)],
                previous: Previous::FaultSentMinutesAgo(10),
                expect: Expect {
                    new: &["NoSuchKey"],
                    states: &[],
                    events: &[("warning", NotSent, true)],
                    ..quiet.expect
                },
                ..quiet
            },
        ]
    }

    fn cluster(code: &str, count: u64, seen: DateTime<Utc>) -> Cluster {
        let key = ClusterKey {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            event_source: "s3.amazonaws.com".into(),
            event_name: "GetObject".into(),
            error_code: code.into(),
            template: format!("{code}: <*>"),
        };
        Cluster {
            fingerprint: key.fingerprint(),
            key,
            count,
            first_seen: seen,
            last_seen: seen,
            top_principals: vec![Counted { value: ALICE.into(), count }],
            top_source_ips: Vec::new(),
            sample_event_ids: vec![format!("{code}-{}", seen.timestamp())],
            sample_message: format!("{code}: not there"),
            sample_record: None,
        }
    }

    fn fingerprint(code: &str) -> String {
        cluster(code, 1, now()).fingerprint
    }

    /// What the store knew of a cluster: ten earlier errors by the same principal.
    fn known_cluster(code: &str) -> KnownCluster {
        KnownCluster {
            id: Uuid::from_u128(u128::from_str_radix(&fingerprint(code), 16).unwrap()),
            top_principals: vec![Counted { value: ALICE.into(), count: 10 }],
            top_source_ips: Vec::new(),
            sample_event_ids: vec!["stored".into()],
        }
    }

    fn window_seen() -> DateTime<Utc> {
        now() - TimeDelta::minutes(30)
    }

    fn baseline_seen() -> DateTime<Utc> {
        now() - TimeDelta::days(2)
    }

    fn key_activity() -> KeyActivity {
        KeyActivity {
            access_key_id: "AKIAWINDOW".into(),
            first_seen: window_seen(),
            last_seen: window_seen(),
            principal_arn: ALICE.into(),
            account_id: ACCOUNT.into(),
            last_event_name: "GetObject".into(),
            last_source_ip: "192.0.2.1".into(),
            count: 4,
        }
    }

    fn previous_state(previous: Previous) -> HashMap<String, serde_json::Value> {
        let Previous::FaultSentMinutesAgo(minutes) = previous else { return HashMap::new() };
        let sent = now() - TimeDelta::minutes(minutes);
        let state = DimensionState {
            fault: Some(OpenFault {
                id: "fault-1".into(),
                started_at: sent - TimeDelta::hours(1),
                last_sent_at: sent,
                last_sent_status: EventStatus::Warning,
            }),
            ..DimensionState::default()
        };
        HashMap::from([(ACCOUNT.to_string(), serde_json::to_value(state).unwrap())])
    }

    fn settings() -> EventSettings {
        EventSettings { guance_configured: true, ..EventSettings::default() }
    }

    /// The inputs of a case, planned by the real planning from where its groups were.
    fn inputs<'a>(case: &Case, inspection: &'a Inspection, events: &'a EventSettings) -> RunInputs<'a> {
        let request = RunRequest {
            dry_run: case.dry_run,
            window_start: case.explicit_window.then(|| at(9, 0, 0)),
            window_end: case.explicit_window.then(|| at(10, 0, 0)),
            ..RunRequest::default()
        };
        let before = |name: &str, b: Before| {
            let (watermark, baseline_until) = match b {
                Before::Never => return None,
                Before::FailedFirstWindow => (at(10, 0, 0), None),
                Before::Read => (at(11, 0, 0), Some(at(0, 0, 0))),
            };
            Some((
                name.to_string(),
                LogGroupState {
                    log_group: name.into(),
                    watermark: Some(watermark),
                    baseline_until,
                    ..LogGroupState::default()
                },
            ))
        };
        let group_states: HashMap<String, LogGroupState> =
            case.groups.iter().filter_map(|&(name, b, _)| before(name, b)).collect();
        let names: Vec<String> = case.groups.iter().map(|g| g.0.to_string()).collect();
        let plan = RunPlan::new(inspection, &request, &names, &group_states, now());
        let groups = plan
            .groups
            .iter()
            .zip(case.groups)
            .map(|(plan, &(_, _, reads))| GroupRead {
                plan: plan.clone(),
                result: match reads {
                    Reads::Failed => Err("ResourceNotFoundException: The specified log group does not exist.".into()),
                    Reads::Ok | Reads::BadFiles(_) => Ok(GroupFigures {
                        records_scanned: 100,
                        error_records: 10,
                        notes: match reads {
                            Reads::BadFiles(n) => {
                                ReadNotes { bad_files: n, problems: vec!["bad.json.gz".into()], ..ReadNotes::default() }
                            }
                            _ => ReadNotes::default(),
                        },
                    }),
                },
            })
            .collect();
        let window: Vec<Cluster> = case.window.iter().map(|&(c, n)| cluster(c, n, window_seen())).collect();
        let error_records = window.iter().map(|c| c.count).sum();
        let reading = Reading {
            groups,
            analysis: Analysis {
                clusters: window,
                keys: vec![key_activity()],
                stats: Stats { records_scanned: 100, error_records, ..Stats::default() },
                ..Analysis::default()
            },
            baseline: Analysis {
                clusters: case.baseline.iter().map(|&(c, n)| cluster(c, n, baseline_seen())).collect(),
                keys: Vec::new(),
                stats: Stats::default(),
                ..Analysis::default()
            },
            key_activity_error: case.key_activity_failed.then(|| "AccessDeniedException".to_string()),
            api_calls: 7,
        };
        let prior = Prior {
            group_states,
            clusters: case.known.iter().map(|&c| (fingerprint(c), known_cluster(c))).collect(),
            access_keys: Vec::new(),
            dimensions: previous_state(case.previous),
        };
        RunInputs {
            inspection,
            run_id: Uuid::nil(),
            exec_mode: ExecMode::Manual,
            dry_run: case.dry_run,
            window: plan.window,
            skipped: plan.skipped,
            reading,
            prior,
            events,
            now: now(),
        }
    }

    fn code_of(fp: &str, case: &Case) -> &'static str {
        case.window.iter().chain(case.baseline).map(|c| c.0).find(|c| fingerprint(c) == fp).unwrap()
    }

    #[test]
    fn what_a_run_decides() {
        let inspection = base();
        let events = settings();
        for case in cases() {
            let input = inputs(&case, &inspection, &events);
            let plans: HashMap<String, GroupPlan> =
                input.reading.groups.iter().map(|g| (g.plan.group.clone(), g.plan.clone())).collect();
            let window = input.window;
            let f = assemble(input);
            let (name, e) = (case.name, &case.expect);

            assert_eq!(f.status, e.status, "{name}");
            let new: Vec<&str> =
                f.run_clusters.iter().filter(|c| c.is_new).map(|c| c.identity.error_code.as_str()).collect();
            assert_eq!(new, e.new, "{name}: new clusters");
            let reported: Vec<&str> =
                f.report.as_ref().unwrap().new_clusters.iter().map(|c| c.identity.error_code.as_str()).collect();
            assert_eq!(reported.len(), e.new.len(), "{name}: the report lists the new clusters");
            let new_records: i64 = f.run_clusters.iter().filter(|c| c.is_new).map(|c| c.count).sum();
            assert_eq!(f.new_error_records, new_records, "{name}");

            let writes: Vec<(&str, i64, Row)> = f
                .cluster_writes
                .iter()
                .map(|w| {
                    let in_window =
                        f.run_clusters.iter().any(|c| c.identity.fingerprint == w.summary.identity.fingerprint);
                    let row = match (w.baseline, in_window) {
                        (true, false) => Row::Baseline,
                        (true, true) => {
                            assert_eq!(w.summary.first_seen, baseline_seen(), "{name}");
                            Row::WindowSeenInBaseline
                        }
                        (false, _) => {
                            assert!(in_window, "{name}");
                            Row::Window
                        }
                    };
                    (code_of(&w.summary.identity.fingerprint, &case), w.summary.count, row)
                })
                .collect();
            assert_eq!(writes, e.writes, "{name}: cluster rows");
            assert_eq!(f.baseline_clusters, e.baseline_clusters, "{name}");
            for w in &f.cluster_writes {
                let code = code_of(&w.summary.identity.fingerprint, &case);
                if case.known.contains(&code) {
                    let k = known_cluster(code);
                    assert_eq!(w.id, k.id, "{name}: a known cluster keeps its id");
                    assert_eq!(w.sample_event_ids, k.sample_event_ids, "{name}: and its samples");
                    assert_eq!(w.top_principals[0].count, 10 + w.summary.count as u64, "{name}: its top lists add up");
                }
            }
            for c in &f.run_clusters {
                let known = case.known.contains(&c.identity.error_code.as_str());
                assert_eq!(
                    c.cluster_id.is_some(),
                    known || !case.dry_run,
                    "{name}: {} has an id",
                    c.identity.error_code
                );
            }

            let states: Vec<(&str, Mark, bool)> = f
                .group_states
                .iter()
                .map(|s| {
                    let window = plans[&s.log_group].window;
                    let mark = match s.watermark {
                        None => Mark::Kept,
                        Some(w) if w == window.end => Mark::End,
                        Some(w) => {
                            assert_eq!(w, window.start, "{name}");
                            Mark::Start
                        }
                    };
                    if s.baseline_until.is_some() {
                        assert_eq!(
                            s.baseline_until,
                            Some(window.start),
                            "{name}: the baseline ends where the window starts"
                        );
                    }
                    (s.log_group.as_str(), mark, s.baseline_until.is_some())
                })
                .collect();
            assert_eq!(states, e.states, "{name}: read positions");
            for (outcome, &(group, _, reads)) in f.log_groups.iter().zip(case.groups) {
                assert_eq!(outcome.name, group, "{name}");
                let failed = matches!(reads, Reads::Failed);
                assert_eq!(outcome.status, if failed { "failed" } else { "succeeded" }, "{name}: {group}");
                assert_eq!(outcome.error.is_some(), failed, "{name}: {group}");
            }

            let events: Vec<(&str, DeliveryState, bool)> =
                f.events.iter().map(|ev| (ev.status.as_str(), ev.delivery_state, ev.is_silent)).collect();
            assert_eq!(events, e.events, "{name}: events");
            let summary = &f.report.as_ref().unwrap().events;
            assert_eq!(summary.len(), f.events.len(), "{name}: the report lists the events");
            let dimensions: Vec<(&str, bool, usize)> = f
                .dimensions
                .iter()
                .map(|(account, v)| {
                    let s: DimensionState = serde_json::from_value(v.clone()).unwrap();
                    (account.as_str(), s.fault.is_some(), s.carried.len())
                })
                .collect();
            assert_eq!(dimensions, e.dimensions, "{name}: alerting states");

            assert_eq!(f.error.as_deref(), e.error, "{name}");
            assert_eq!(f.key_writes.len(), if case.dry_run { 0 } else { 1 }, "{name}: access keys");
            assert_eq!((f.window_start, f.window_end), (Some(window.0), Some(window.1)), "{name}");
            assert_eq!(f.aws_api_calls, 7, "{name}");
        }
    }

    #[test]
    fn clusters_silenced_in_one_run_are_carried_into_the_next_event() {
        let inspection = base();
        let events = settings();
        let silenced = Case { window: &[("NoSuchKey", 3)], previous: Previous::FaultSentMinutesAgo(10), ..quiet() };
        let first = assemble(inputs(&silenced, &inspection, &events));
        assert!(first.events[0].is_silent);

        // The next run is quiet: the fault recovers, and its event carries what was silenced.
        let mut next = inputs(&quiet(), &inspection, &events);
        next.prior.dimensions = first.dimensions.into_iter().collect();
        let second = assemble(next);
        assert_eq!(second.events.len(), 1);
        assert_eq!(second.events[0].status, "ok");
        assert!(second.events[0].event.to_string().contains(&fingerprint("NoSuchKey")), "{}", second.events[0].event);
        let state: DimensionState = serde_json::from_value(second.dimensions[0].1.clone()).unwrap();
        assert_eq!(state, DimensionState::default(), "a recovery ends the fault and what it carried");
    }

    #[test]
    fn the_report_lists_the_windows_keys_first_then_known_ones() {
        let inspection = base();
        let events = EventSettings::default();
        let mut input = inputs(&quiet(), &inspection, &events);
        let stored = |id: &str| AccessKeyView { access_key_id: id.into(), ..key_view(&key_activity()) };
        input.prior.access_keys = vec![stored("AKIAWINDOW"), stored("AKIAIDLE")];
        let report = assemble(input).report.unwrap();
        let keys: Vec<(&str, bool)> =
            report.access_keys.iter().map(|k| (k.access_key_id.as_str(), k.active_in_window)).collect();
        assert_eq!(keys, [("AKIAWINDOW", true), ("AKIAIDLE", false)]);
        assert_eq!(report.events_note.as_deref(), Some(outbox::NOT_CONFIGURED), "without Guance, says why");
    }

    #[test]
    fn the_report_says_whether_keys_were_left_out() {
        let active = |n: usize| -> Vec<KeyActivity> {
            (0..n).map(|i| KeyActivity { access_key_id: format!("AKIAACTIVE{i:04}"), ..key_activity() }).collect()
        };
        let stored = |n: usize| -> Vec<AccessKeyView> {
            (0..n)
                .map(|i| AccessKeyView { access_key_id: format!("AKIASTORED{i:04}"), ..key_view(&key_activity()) })
                .collect()
        };
        for (window, known, listed, truncated) in [
            (3, 0, 3, false),
            (3, 47, 50, false),
            (3, 48, 50, true),
            (50, 0, 50, false),
            (50, 1, 50, true),
            (51, 0, 50, true),
        ] {
            let (keys, cut) = report_keys(&active(window), &stored(known));
            assert_eq!((keys.len(), cut), (listed, truncated), "{window} active, {known} others known");
            assert!(keys.iter().take(window.min(50)).all(|k| k.active_in_window));
        }
        // A key active now that was known before is listed once, as active.
        let mut both = stored(2);
        both[0].access_key_id = "AKIAACTIVE0000".into();
        let (keys, cut) = report_keys(&active(1), &both);
        assert_eq!(
            keys.iter().map(|k| k.access_key_id.as_str()).collect::<Vec<_>>(),
            ["AKIAACTIVE0000", "AKIASTORED0001"]
        );
        assert!(!cut);
    }

    #[test]
    fn a_key_active_in_the_baseline_and_the_window_is_written_once() {
        let window = key_activity();
        let baseline = KeyActivity {
            first_seen: baseline_seen(),
            last_seen: baseline_seen(),
            last_event_name: "ListBuckets".into(),
            count: 2,
            ..key_activity()
        };
        let writes = key_writes(std::slice::from_ref(&window), &[baseline]);
        assert_eq!(writes.len(), 1);
        let k = &writes[0];
        assert_eq!((k.first_seen, k.last_seen), (baseline_seen(), window_seen()));
        assert_eq!((k.last_event_name.as_str(), k.total_events), ("GetObject", 6));
    }

    #[test]
    fn top_lists_merge_by_value() {
        let a = vec![Counted { value: "x".into(), count: 3 }, Counted { value: "y".into(), count: 1 }];
        let b = vec![Counted { value: "y".into(), count: 5 }];
        let m = merge_counted(&a, &b, TOP_K);
        assert_eq!(m[0], Counted { value: "y".into(), count: 6 });
        assert_eq!(m[1], Counted { value: "x".into(), count: 3 });
    }
    /// Empty default windows are warned about on each of the first few in a row, then once a
    /// day; a window with records ends the run of them; explicit windows always say so.
    #[test]
    fn empty_windows_are_warned_about_until_the_group_is_known_to_be_idle() {
        let mut idle = Idle::of(None);
        let hour = |h: i64| now() + TimeDelta::hours(h);
        let mut said = Vec::new();
        for h in 0..30 {
            said.push(idle.observe(Some(true), true, hour(h)).is_some());
        }
        let warned: Vec<usize> = said.iter().enumerate().filter(|(_, s)| **s).map(|(h, _)| h).collect();
        assert_eq!(warned, [0, 1, 2, 26], "the first three, then once a day");
        assert_eq!((idle.empty_windows, idle.warned_at), (30, Some(hour(26))));
        assert_eq!(idle.observe(Some(true), false, hour(30)).as_deref(), Some(EMPTY_WINDOW), "explicit window");
        assert_eq!(idle.empty_windows, 30, "an explicit window leaves the count alone");
        assert_eq!(idle.observe(None, true, hour(31)), None, "unknown: nothing said, nothing changed");
        assert_eq!(idle.empty_windows, 30);
        assert_eq!(idle.observe(Some(false), true, hour(32)), None);
        assert_eq!((idle.empty_windows, idle.warned_at), (0, None));
        let again = idle.observe(Some(true), true, hour(33)).unwrap();
        assert_eq!(again, EMPTY_WINDOW, "a new run of empty windows is said at once");
        let third = (0..2).filter_map(|h| idle.observe(Some(true), true, hour(34 + h))).last().unwrap();
        assert!(third.ends_with("(3 windows in a row; said once a day while it stays so)"), "{third}");
    }
}
