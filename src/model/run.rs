//! A run: one inspection of one time window, and what it found.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::cluster::{AccessKeyView, ClusterSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, waiting for a free run slot.
    Queued,
    Running,
    /// Every log group was read.
    Succeeded,
    /// Some log groups could not be read; see `log_groups[].error`.
    Partial,
    /// Nothing could be read, or the results could not be stored.
    Failed,
    /// The process stopped while the run was in progress; its window is read again next time.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "partial" => RunStatus::Partial,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            _ => return None,
        })
    }

    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Api,
    Schedule,
    Func,
    /// The `scan` command.
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Schedule => "schedule",
            Trigger::Func => "func",
            Trigger::Cli => "cli",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "api" => Trigger::Api,
            "schedule" => Trigger::Schedule,
            "func" => Trigger::Func,
            "cli" => Trigger::Cli,
            _ => return None,
        })
    }
}

/// How Guance is told a run was started (`df_crontab_exec_mode`, Guance's event field
/// reference: `crontab` for scheduled execution, `manual` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecMode {
    /// On a schedule: the built-in scheduler, or a caller that runs on one (a Func crontab
    /// config, a cron job).
    Crontab,
    /// By a person or another system.
    Manual,
}

impl ExecMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecMode::Crontab => "crontab",
            ExecMode::Manual => "manual",
        }
    }

    /// The mode of a run: what its caller said, else `crontab` for the built-in scheduler's
    /// runs and `manual` for the others.
    pub fn of(trigger: Trigger, asked: Option<ExecMode>) -> ExecMode {
        asked.unwrap_or(if trigger == Trigger::Schedule { ExecMode::Crontab } else { ExecMode::Manual })
    }
}

/// Body of `POST /api/v1/inspections/{id}/runs`; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Start of an explicit window (inclusive). With `window_end`; does not move the watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<DateTime<Utc>>,
    /// End of an explicit window (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<DateTime<Utc>>,
    /// Read these log groups instead of the inspection's for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_groups: Option<Vec<String>>,
    /// Compute and record the result, but learn nothing: no cluster becomes known, no
    /// watermark moves.
    #[serde(default)]
    pub dry_run: bool,
    /// What the run's Guance events say started it (`df_crontab_exec_mode`): `crontab` for a
    /// caller that runs on a schedule (a cron job, a Func crontab config). Default: `crontab`
    /// for the built-in scheduler's runs, `manual` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_mode: Option<ExecMode>,
}

/// Outcome of one log group in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogGroupOutcome {
    pub name: String,
    /// `succeeded`, `failed`, or `pending` before the run finishes.
    pub status: String,
    pub records_scanned: u64,
    pub error_records: u64,
    /// Start of the span read for this group (groups can differ after a partial run).
    pub window_start: Option<DateTime<Utc>>,
    /// Whether the baseline of this group was read in this run.
    #[serde(default)]
    pub baseline_read: bool,
    /// The AWS error that stopped this group, if any.
    pub error: Option<String>,
    /// Problems that did not stop the group, e.g. files that could not be read.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The newest run of an inspection, as shown on the inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub status: RunStatus,
    pub finished_at: Option<DateTime<Utc>>,
    pub clusters_new: i64,
}

/// The result a caller shows: the three parts of the original inspection's event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunReport {
    pub inspection_id: Uuid,
    pub inspection: String,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    /// Error records that fell into new clusters.
    pub new_error_records: i64,
    /// Per cloud account: its new error records and clusters.
    pub accounts: Vec<AccountSummary>,
    /// Access keys with their last known activity: those active in this window first, then
    /// the most recently active others, 50 at most (`GET /inspections/{id}/access-keys` has
    /// them all).
    pub access_keys: Vec<AccessKeyView>,
    /// Access keys active in this window.
    #[serde(default)]
    pub access_keys_active: i64,
    /// True when `access_keys` leaves out keys that were active in this window or are known.
    #[serde(default)]
    pub access_keys_truncated: bool,
    /// Clusters this inspection had never seen, largest first.
    pub new_clusters: Vec<ClusterSummary>,
    /// CloudTrail Insights events of the window (AWS's own findings of unusual call or error
    /// rates), earliest first, at most 100.
    #[serde(default)]
    pub insights: Vec<InsightView>,
    /// True when `new_clusters` was cut to its first 100.
    pub new_clusters_truncated: bool,
    /// The Guance events this run recorded (one per cloud account with new clusters, and
    /// recoveries), and what became of them.
    #[serde(default)]
    pub events: Vec<RunEventSummary>,
    /// Why no event goes to Guance, when none can (e.g. Guance is not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_note: Option<String>,
    /// What the reader should know that did not make the run partial, a sentence each,
    /// naming its log group: e.g. a window without any CloudTrail record.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A Guance event of a run, in brief (`GET /api/v1/events/{id}` has it all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunEventSummary {
    pub event_id: String,
    pub account_id: String,
    /// `df_status`.
    pub status: String,
    pub is_silent: bool,
    /// At the time the run finished; delivery happens afterwards.
    pub delivery_state: crate::model::event::DeliveryState,
    pub note: Option<String>,
}

/// A CloudTrail Insights event: the rate of calls to an API, or of its errors, left its
/// baseline (`state: Start`), or came back (`End`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InsightView {
    pub event_time: DateTime<Utc>,
    pub account_id: String,
    pub region: String,
    /// `Start` or `End`.
    pub state: String,
    /// `ApiCallRateInsight` or `ApiErrorRateInsight`.
    pub insight_type: String,
    pub event_source: String,
    pub event_name: String,
    /// The error an `ApiErrorRateInsight` is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_code: String,
    /// Calls or errors per minute, usually and during the finding.
    pub baseline_average: Option<f64>,
    pub insight_average: Option<f64>,
    pub event_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccountSummary {
    pub account_id: String,
    pub new_error_records: i64,
    pub new_clusters: i64,
    pub error_records: i64,
}

/// A run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub inspection_id: Uuid,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub dry_run: bool,
    /// Whether the window was given by the caller (then the watermark did not move).
    pub explicit_window: bool,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    /// Span left unread because the inspection had paused longer than `max_catch_up_minutes`.
    pub skipped_start: Option<DateTime<Utc>>,
    pub skipped_end: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub records_scanned: i64,
    pub error_records: i64,
    pub malformed_records: i64,
    pub ignored_records: i64,
    /// Records read with a repair rather than dropped: a field the engine can do without held
    /// the wrong type (read as its JSON text), or text that was not UTF-8 (decoded lossily).
    pub warned_records: i64,
    /// CloudTrail Insights events in the window; the report lists them.
    pub insight_events: i64,
    pub clusters_total: i64,
    pub clusters_new: i64,
    pub new_error_records: i64,
    /// Clusters the baseline read of a first look taught: not known before and now known
    /// without being reported, whether or not the window saw them too.
    pub baseline_clusters: i64,
    pub aws_api_calls: i64,
    pub log_groups: Vec<LogGroupOutcome>,
    pub error: Option<String>,
    pub report: Option<RunReport>,
    /// The request that started the run.
    pub request: RunRequest,
    /// The caller's trace id (`X-Trace-Id` of a Func-style call, or the one generated for it;
    /// `SCHEDULE-<slot>` for scheduled runs).
    pub trace_id: Option<String>,
}

impl Run {
    pub fn summary(&self) -> RunSummary {
        RunSummary { id: self.id, status: self.status, finished_at: self.finished_at, clusters_new: self.clusters_new }
    }
}
