//! Error clusters and access-key activity as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::alerting::{NotifyLevel, SeverityRules};
use crate::engine::rules::{self, RuleInput};

pub use crate::engine::Counted;

/// Adds two top lists and keeps the `keep` largest: a cluster found again, or two clusters
/// that turn out to be one.
pub fn merge_counted(a: &[Counted], b: &[Counted], keep: usize) -> Vec<Counted> {
    let mut all: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for v in a.iter().chain(b) {
        *all.entry(v.value.as_str()).or_default() += v.count;
    }
    let mut out: Vec<Counted> =
        all.into_iter().map(|(value, count)| Counted { value: value.to_string(), count }).collect();
    out.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.value.cmp(&y.value)));
    out.truncate(keep);
    out
}

/// What makes a cluster the cluster it is: the same error (account, region, API, error code
/// and message template) is the same cluster across runs, hosts and versions. Run reports,
/// known clusters and events all carry it, flattened into their own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterIdentity {
    /// A hash of the other six fields; stable, so it names the cluster everywhere.
    pub fingerprint: String,
    pub account_id: String,
    pub region: String,
    pub event_source: String,
    pub event_name: String,
    /// The record's `errorCode`, or `ConsoleLoginFailure` for a failed console sign-in.
    pub error_code: String,
    /// The error message with its variable parts masked (`<ARN>`, `<ID>`, `<NUM>`, …).
    pub template: String,
}

impl ClusterIdentity {
    /// The identity of a cluster the engine found.
    pub fn of(c: &crate::engine::Cluster) -> Self {
        let k = &c.key;
        ClusterIdentity {
            fingerprint: c.fingerprint.clone(),
            account_id: k.account_id.clone(),
            region: k.region.clone(),
            event_source: k.event_source.clone(),
            event_name: k.event_name.clone(),
            error_code: k.error_code.clone(),
            template: k.template.clone(),
        }
    }
}

/// Ids of the CIS rules (`CloudWatch.1` … `CloudWatch.14`, [`rules::CIS_RULES`]) a cluster
/// matches, read from its key, its top principals and, when there is one, a full record of
/// it. Runs, cluster views, `scan` and Guance events all take them from here.
pub fn cis_rules(
    identity: &ClusterIdentity,
    top_principals: &[Counted],
    sample: Option<&serde_json::Value>,
) -> Vec<String> {
    let input = RuleInput {
        event_source: &identity.event_source,
        event_name: &identity.event_name,
        error_code: &identity.error_code,
        template: &identity.template,
        principals: top_principals.iter().map(|p| p.value.as_str()).collect(),
        sample,
    };
    rules::matching_rules(&input).into_iter().map(str::to_owned).collect()
}

/// The CIS rules a cluster matches and the level an inspection's severity rules give it
/// (which is the level of the Guance event it raises).
pub fn rate(
    identity: &ClusterIdentity,
    top_principals: &[Counted],
    sample: Option<&serde_json::Value>,
    severity: &SeverityRules,
) -> (Vec<String>, NotifyLevel) {
    let matched = cis_rules(identity, top_principals, sample);
    let level = severity.level_of(&matched, &identity.error_code);
    (matched, level)
}

/// One cluster as found in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterSummary {
    /// The known cluster's id (absent for clusters of a dry run that were never recorded).
    pub cluster_id: Option<Uuid>,
    #[serde(flatten)]
    pub identity: ClusterIdentity,
    pub is_new: bool,
    /// The level the inspection's `severity_rules` gave the cluster in this run: the level
    /// of the Guance event it raises when new.
    #[serde(default = "NotifyLevel::unmatched")]
    pub level: NotifyLevel,
    /// CIS AWS Foundations rules the cluster matches (`CloudWatch.1` … `CloudWatch.14`).
    #[serde(default)]
    pub cis_rules: Vec<String>,
    /// Records of this cluster in the run's window.
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub top_principals: Vec<Counted>,
    pub top_source_ips: Vec<Counted>,
    pub sample_event_ids: Vec<String>,
    /// One raw error message of the cluster.
    pub sample_message: String,
}

impl ClusterSummary {
    /// An engine cluster as found by a run (times at stored precision), rated with its
    /// sample record under `severity`.
    pub fn from_cluster(
        c: &crate::engine::Cluster,
        cluster_id: Option<Uuid>,
        is_new: bool,
        severity: &SeverityRules,
    ) -> Self {
        let identity = ClusterIdentity::of(c);
        let sample: Option<serde_json::Value> = c.sample_record.as_deref().and_then(|r| serde_json::from_str(r).ok());
        let (cis_rules, level) = rate(&identity, &c.top_principals, sample.as_ref(), severity);
        ClusterSummary {
            cluster_id,
            identity,
            is_new,
            level,
            cis_rules,
            count: c.count as i64,
            first_seen: crate::model::time::micros(c.first_seen),
            last_seen: crate::model::time::micros(c.last_seen),
            top_principals: c.top_principals.clone(),
            top_source_ips: c.top_source_ips.clone(),
            sample_event_ids: c.sample_event_ids.clone(),
            sample_message: c.sample_message.clone(),
        }
    }
}

/// A cluster an inspection knows, across all its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    pub id: Uuid,
    pub inspection_id: Uuid,
    #[serde(flatten)]
    pub identity: ClusterIdentity,
    /// Records seen across all runs.
    pub total_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The level the severity rules gave the cluster in the last run that saw it.
    pub level: NotifyLevel,
    /// CIS AWS Foundations rules the cluster matches (`CloudWatch.1` … `CloudWatch.14`), as
    /// the last run that saw it read them.
    pub cis_rules: Vec<String>,
    /// Whether the cluster was learned from a baseline read (it was there before the window
    /// the inspection first looked at) rather than reported as new.
    pub baseline: bool,
    /// When this service first recorded the cluster.
    pub discovered_at: DateTime<Utc>,
    pub discovered_run_id: Option<Uuid>,
    pub last_run_id: Option<Uuid>,
    pub top_principals: Vec<Counted>,
    pub top_source_ips: Vec<Counted>,
    pub sample_event_ids: Vec<String>,
    pub sample_message: String,
    /// One full CloudTrail record of the cluster (only on `GET /api/v1/clusters/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_record: Option<serde_json::Value>,
}

/// Last known activity of an access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccessKeyView {
    pub access_key_id: String,
    pub principal_arn: String,
    pub account_id: String,
    pub first_seen: DateTime<Utc>,
    /// Newest event time seen for the key.
    pub last_seen: DateTime<Utc>,
    pub last_event_name: String,
    pub last_source_ip: String,
    /// Events seen across all runs.
    pub total_events: i64,
    /// Whether the key was active in the run's window (reports only).
    #[serde(default)]
    pub active_in_window: bool,
}
