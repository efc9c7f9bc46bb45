//! The Guance event of one cloud account after one run, as Guance's own "AWS CloudTrail
//! anomalous event inspection" reports it, and its line-protocol form.
//!
//! Inputs are plain structs ([`EventContext`], [`AccountRun`], [`EventCluster`]) so the runner
//! can fill them from whatever it holds; [`evaluate`] runs severity, the alerting state machine
//! and the rendering in one call.
//!
//! `df_message` is markdown with the original's three parts: the number of new CloudTrail
//! error records in the account; its access keys with their last activity (who, from where);
//! the new error clusters, each with its error code, API, template, count, first/last seen,
//! top principals, matched CIS rules, a link to this service's cluster page and one to the
//! records in CloudWatch Logs Insights. All record text (templates, messages, principals, IPs,
//! error codes — anything from CloudTrail) is untrusted: it is shown only inside inline code
//! spans whose fence is longer than any backtick run in the text, with line breaks, control
//! and bidirectional-override characters replaced and the length bounded. Inside a code span
//! markdown does not interpret links, emphasis, HTML or headings, and without line breaks the
//! text cannot start a new block. No tables are used (a `|` would split a cell even inside
//! code).
//!
//! Field names and types follow Guance's event field reference (guance-docs
//! `docs/zh/events/index.md` and `docs/en/events/index.md`, "事件字段说明" / "Field
//! Description"; the template variables in `docs/zh/monitoring/event-template.md`):
//! - `df_dimension_tags` is the detection dimension: `account_id`, `inspection_id` and
//!   `region`. The inspection's *name* is not in it (renaming an inspection must not start new
//!   dimensions); it goes in `df_monitor_checker_name` and a plain `inspection_name` field.
//! - `df_monitor_checker_event_ref` ("监控器事件关联，只和 `df_dimension_tags` 和
//!   `df_monitor_checker_id` 关联的字段", String): 32 hex characters of SHA-256 over the
//!   inspection's `refKey` and the dimension tags. The `refKey` stands for the checker id
//!   because it is known before Guance assigns the `rul_…` id and never changes.
//! - `df_sub_status` ("事件细节状态，作为 `df_status` 的补充"): the same value as `df_status`,
//!   as Guance's own monitor events carry it (`critical` … `ok`, `ok` on a recovery).
//! - `df_event_report` ("智能监控报告数据", no schema published): JSON text with the parts
//!   of the original inspection's event detail — overview, CloudTrail new error count, access
//!   keys' last activity, new error clusters with links (see [`report`]).
//! - `df_crontab_exec_mode` (String(Enum) `crontab`/`manual`): older revisions of the
//!   reference call it `df_exec_mode` with `crontab`/`async`; the current name is written.
//!
//! Choices where Guance's contract is not confirmed:
//! - Measurement `monitor`: Guance queries monitor events as ``E::`monitor` ``.
//! - The dimension tags are also written as line-protocol tags (Guance lifts them to
//!   top-level event fields). A tag value cannot carry a backslash before `,`/`=`/space or at
//!   its end; tag values have `\` replaced by `/` and control characters by spaces, while
//!   `df_dimension_tags` keeps the exact text.
//! - `df_is_silent` is the string `"true"`/`"false"` (Guance's event field reference says so).
//!   Every event is written, silent or not: an alert policy silences notifications, not the
//!   event history.
//! - Times in `df_*` fields are Unix seconds (`df_check_range_*`, `df_fault_start_time`,
//!   `df_issue_start_time`) and durations are seconds, as in Guance's event field reference.
//!   No `date` field is written: the point's own nanosecond timestamp is the event time, and
//!   the references disagree on `date`'s unit.
//! - `df_alert_policy_ids` is JSON array text: OpenWay's array fields are not stored by
//!   Guance's backend yet, per DataKit's API reference.
//! - `df_event_id` is `event-` + 32 hex chars of SHA-256 over inspection id, run id and
//!   account, so writing the same run's event again never makes a second event.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::alerting::{self, Action, Decision, DimensionState, FaultFields, RunOutcome, SilentReason};
use super::lineproto::{EncodeError, Point};
use crate::engine::Cluster;
use crate::engine::rules;
use crate::model::alerting::{AlertPolicy, NotifyLevel, SeverityRules};
use crate::model::cluster::{self, AccessKeyView, ClusterIdentity, ClusterSummary, Counted};

/// Measurement of every event this service writes.
pub const MEASUREMENT: &str = "monitor";
/// Clusters listed in `df_message` per section; all of them are in `df_event_detail`.
pub const MAX_MESSAGE_CLUSTERS: usize = 30;
/// Access keys listed in `df_message`.
pub const MAX_MESSAGE_KEYS: usize = 20;
/// Longest piece of record text shown in the message, in chars.
const MAX_TEXT_CHARS: usize = 300;
const MAX_TITLE_CHARS: usize = 200;

/// `df_status`, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Ok,
    Info,
    Warning,
    Error,
    Critical,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Ok => "ok",
            EventStatus::Info => "info",
            EventStatus::Warning => "warning",
            EventStatus::Error => "error",
            EventStatus::Critical => "critical",
        }
    }
}

impl From<NotifyLevel> for EventStatus {
    fn from(l: NotifyLevel) -> Self {
        match l {
            NotifyLevel::Critical => EventStatus::Critical,
            NotifyLevel::Error => EventStatus::Error,
            NotifyLevel::Warning => EventStatus::Warning,
            NotifyLevel::Info => EventStatus::Info,
        }
    }
}

/// One new error cluster as an event shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCluster {
    pub cluster_id: Option<Uuid>,
    #[serde(flatten)]
    pub identity: ClusterIdentity,
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub top_principals: Vec<Counted>,
    pub top_source_ips: Vec<Counted>,
    pub sample_message: String,
    /// Ids of the CIS rules the cluster matches ([`rules::CIS_RULES`]).
    pub rules: Vec<String>,
    /// When an unsent (silenced) event first recorded the cluster, if it is carried over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<DateTime<Utc>>,
}

impl EventCluster {
    /// From a run's cluster summary; `sample_record` is the cluster's stored sample, which
    /// lets the rules read fields beyond the cluster key.
    pub fn from_summary(s: &ClusterSummary, sample_record: Option<&Value>) -> Self {
        EventCluster {
            rules: cluster::cis_rules(&s.identity, &s.top_principals, sample_record),
            cluster_id: s.cluster_id,
            identity: s.identity.clone(),
            count: s.count,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            top_principals: s.top_principals.clone(),
            top_source_ips: s.top_source_ips.clone(),
            sample_message: s.sample_message.clone(),
            carried_from: None,
        }
    }

    /// From an engine cluster, using its raw sample record.
    pub fn from_cluster(c: &Cluster, cluster_id: Option<Uuid>) -> Self {
        let summary = ClusterSummary::from_cluster(c, cluster_id, true, &SeverityRules::default());
        let sample: Option<Value> = c.sample_record.as_deref().and_then(|r| serde_json::from_str(r).ok());
        EventCluster::from_summary(&summary, sample.as_ref())
    }

    /// This cluster's level under an inspection's severity rules.
    pub fn level(&self, severity: &SeverityRules) -> NotifyLevel {
        severity.level_of(&self.rules, &self.identity.error_code)
    }
}

/// The level of an event about `clusters`: the most severe of theirs; `None` when there are none.
pub fn event_level(severity: &SeverityRules, clusters: &[EventCluster]) -> Option<NotifyLevel> {
    clusters.iter().map(|c| c.level(severity)).max_by_key(|l| l.rank())
}

/// How the run was started, as `df_crontab_exec_mode` says it.
pub use crate::model::run::ExecMode;

/// Everything about the inspection and the run that every account's event shares.
#[derive(Debug, Clone, PartialEq)]
pub struct EventContext {
    pub inspection_id: Uuid,
    pub inspection_name: String,
    pub run_id: Uuid,
    /// `df_monitor_ref_key`: the inspection's key in Guance's self-built inspection registry.
    pub ref_key: String,
    /// `df_monitor_checker_name`.
    pub checker_name: String,
    /// `df_monitor_checker_id` (`rul_…`) once Guance has registered the inspection.
    pub checker_id: Option<String>,
    /// `df_monitor_checker`: the function name shown as the inspection's source.
    pub func_id: String,
    /// Region of the log groups: the `region` dimension and where console links point.
    pub region: String,
    pub log_groups: Vec<String>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub exec_mode: ExecMode,
    /// `df_alert_policy_ids` (`altpl_…`).
    pub alert_policy_ids: Vec<String>,
    /// Base URL of this service, without a trailing slash.
    pub public_url: String,
    /// Signs the links to console pages so they open without a token; None leaves them
    /// plain (the page then asks to sign in).
    pub share: Option<crate::share::LinkSigner>,
    pub severity_rules: SeverityRules,
}

/// One cloud account's part of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountRun {
    pub account_id: String,
    /// Error records that fell into new clusters.
    pub new_error_records: i64,
    /// All error records of the account in the window.
    pub error_records: i64,
    pub new_clusters: Vec<EventCluster>,
    /// The account's access keys, most recently active first.
    pub access_keys: Vec<AccessKeyView>,
}

/// A rendered event, ready to store (it serializes) and to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuanceEvent {
    pub time: DateTime<Utc>,
    pub event_id: String,
    pub status: EventStatus,
    pub title: String,
    pub message: String,
    pub dimension_tags: BTreeMap<String, String>,
    pub detail: Value,
    pub check_range_start: DateTime<Utc>,
    pub check_range_end: DateTime<Utc>,
    pub fault: Option<FaultFields>,
    pub is_silent: bool,
    /// Whether the event is to be delivered (false: recorded only).
    pub deliver: bool,
    pub alert_policy_ids: Vec<String>,
    pub exec_mode: ExecMode,
    pub ref_key: String,
    pub checker_name: String,
    pub checker_id: Option<String>,
    pub func_id: String,
    /// `df_event_report` (absent on events stored before it existed).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub report: Value,
    /// The inspection's name, a plain field beside the dimension (empty on events stored
    /// before it existed, whose dimension tags still carry it).
    #[serde(default)]
    pub inspection_name: String,
}

/// The id of the event for this inspection, run and account: the same inputs always give the
/// same id, so a retried write updates rather than duplicates.
pub fn event_id(inspection_id: Uuid, run_id: Uuid, account_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"cloudtrail-inspector\x1f");
    h.update(inspection_id.as_bytes());
    h.update([0x1f]);
    h.update(run_id.as_bytes());
    h.update([0x1f]);
    h.update(account_id.as_bytes());
    format!("event-{}", hex::encode(&h.finalize()[..16]))
}

/// The result of [`evaluate`]: what to do, the event to record (if any), the state to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountOutcome {
    pub decision: Decision,
    pub event: Option<GuanceEvent>,
}

/// Severity, alerting decision and rendering for one account after one run. `read_ok` is
/// false when the run could not read its data (then nothing is concluded).
pub fn evaluate(
    ctx: &EventContext,
    account: &AccountRun,
    prev: &DimensionState,
    policy: &AlertPolicy,
    read_ok: bool,
    now: DateTime<Utc>,
) -> AccountOutcome {
    let outcome = if !read_ok {
        RunOutcome::Inconclusive
    } else {
        match event_level(&ctx.severity_rules, &account.new_clusters) {
            Some(level) => RunOutcome::NewClusters { level, clusters: account.new_clusters.clone() },
            None => RunOutcome::Quiet,
        }
    };
    let id = event_id(ctx.inspection_id, ctx.run_id, &account.account_id);
    let decision = alerting::decide(prev, outcome, policy, &id, now);
    let event = decision.records_event().then(|| build_event(ctx, account, &decision, now));
    AccountOutcome { decision, event }
}

/// Renders the event a decision calls for.
pub fn build_event(ctx: &EventContext, account: &AccountRun, decision: &Decision, now: DateTime<Utc>) -> GuanceEvent {
    let dimension_tags = dimension_tags(ctx.inspection_id, &account.account_id, &ctx.region);
    let recovery = decision.action == Action::Recover;
    let title = if recovery { recovery_title(ctx, account) } else { fault_title(ctx, account) };
    GuanceEvent {
        time: now,
        event_id: event_id(ctx.inspection_id, ctx.run_id, &account.account_id),
        status: decision.status,
        report: report(ctx, account, decision, &title),
        inspection_name: ctx.inspection_name.clone(),
        title,
        message: render_message(ctx, account, decision),
        dimension_tags,
        detail: detail(ctx, account, decision),
        check_range_start: ctx.window_start,
        check_range_end: ctx.window_end,
        fault: decision.fault.clone(),
        is_silent: decision.is_silent(),
        deliver: decision.records_event(),
        alert_policy_ids: ctx.alert_policy_ids.clone(),
        exec_mode: ctx.exec_mode,
        ref_key: ctx.ref_key.clone(),
        checker_name: ctx.checker_name.clone(),
        checker_id: ctx.checker_id.clone(),
        func_id: ctx.func_id.clone(),
    }
}

/// The detection dimension of an inspection's events for one cloud account. Ids, not names:
/// an inspection renamed keeps its dimensions (and so its open faults).
pub fn dimension_tags(inspection_id: Uuid, account_id: &str, region: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("account_id".to_owned(), account_id.to_owned()),
        ("inspection_id".to_owned(), inspection_id.to_string()),
        ("region".to_owned(), region.to_owned()),
    ])
}

/// `df_monitor_checker_event_ref`: the same for every event of one checker and one
/// dimension, different otherwise. Guance derives it from the checker id and
/// `df_dimension_tags`; the `refKey` stands in for the checker id here (see the module docs).
pub fn checker_event_ref(ref_key: &str, dimension_tags: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(ref_key.as_bytes());
    h.update([0x1f]);
    // A BTreeMap serializes with sorted keys: the same tags always give the same text.
    h.update(serde_json::to_string(dimension_tags).expect("strings serialize").as_bytes());
    hex::encode(&h.finalize()[..16])
}

impl GuanceEvent {
    /// The event as a line-protocol point.
    pub fn to_point(&self) -> Point {
        let ts = self.time.timestamp_nanos_opt().unwrap_or_else(|| self.time.timestamp().saturating_mul(1_000_000_000));
        let mut p = Point::new(MEASUREMENT, ts);
        for (k, v) in &self.dimension_tags {
            let v = tag_safe(v);
            if !v.is_empty() {
                p = p.tag(k.clone(), v);
            }
        }
        let dims = serde_json::to_string(&self.dimension_tags).expect("strings serialize");
        let policies = serde_json::to_string(&self.alert_policy_ids).expect("strings serialize");
        let range = (self.check_range_end - self.check_range_start).num_seconds().max(0);
        p = p
            .field("df_source", "monitor")
            .field("df_monitor_type", "bot_obs")
            .field("df_status", self.status.as_str())
            .field("df_sub_status", self.status.as_str())
            .field("df_event_id", self.event_id.clone())
            .field("df_title", self.title.clone())
            .field("df_message", self.message.clone())
            .field("df_dimension_tags", dims)
            .field("df_date_range", range)
            .field("df_check_range_start", self.check_range_start.timestamp())
            .field("df_check_range_end", self.check_range_end.timestamp())
            .field("df_monitor_checker", self.func_id.clone())
            .field("df_monitor_checker_name", self.checker_name.clone())
            .field("df_monitor_checker_event_ref", checker_event_ref(&self.ref_key, &self.dimension_tags))
            .field("df_monitor_ref_key", self.ref_key.clone())
            .field("df_event_detail", self.detail.to_string())
            .field("df_alert_policy_ids", policies)
            .field("df_is_silent", if self.is_silent { "true" } else { "false" })
            .field("df_crontab_exec_mode", self.exec_mode.as_str());
        if let Some(id) = &self.checker_id {
            p = p.field("df_monitor_checker_id", id.clone());
        }
        if !self.report.is_null() {
            p = p.field("df_event_report", self.report.to_string());
        }
        if !self.inspection_name.is_empty() {
            p = p.field("inspection_name", self.inspection_name.clone());
        }
        if let Some(f) = &self.fault {
            p = p
                .field("df_fault_id", f.id.clone())
                .field("df_fault_status", f.status.as_str())
                .field("df_fault_start_time", f.start_time.timestamp())
                .field("df_fault_duration", f.duration_secs)
                .field("df_issue_start_time", f.start_time.timestamp())
                .field("df_issue_duration", f.duration_secs);
        }
        p
    }

    /// The event as one line of line protocol.
    pub fn to_line_protocol(&self) -> Result<String, EncodeError> {
        self.to_point().encode()
    }
}

/// A tag value the encoder accepts: controls become spaces, `\` becomes `/`, bounded length.
fn tag_safe(v: &str) -> String {
    let s: String = v
        .chars()
        .map(|c| {
            if c.is_control() {
                ' '
            } else if c == '\\' {
                '/'
            } else {
                c
            }
        })
        .collect();
    let s = s.trim();
    let mut end = s.len().min(super::lineproto::MAX_TAG_VALUE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn fault_title(ctx: &EventContext, a: &AccountRun) -> String {
    let clusters = a.new_clusters.len() as i64;
    let t = format!(
        "[{}] {} ({}) in AWS account {}",
        ctx.inspection_name,
        plural(clusters, "new CloudTrail error cluster", "new CloudTrail error clusters"),
        plural(a.new_error_records, "record", "records"),
        account_label(&a.account_id),
    );
    clean(&t, MAX_TITLE_CHARS)
}

fn recovery_title(ctx: &EventContext, a: &AccountRun) -> String {
    let t = format!(
        "[{}] AWS account {}: no new CloudTrail errors, recovered",
        ctx.inspection_name,
        account_label(&a.account_id)
    );
    clean(&t, MAX_TITLE_CHARS)
}

fn account_label(id: &str) -> &str {
    if id.is_empty() { "(unknown)" } else { id }
}

/// Text without line breaks, control or bidi-override characters, trimmed, at most `max`
/// chars (with `…` when cut).
pub fn clean(s: &str, max: usize) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            let invisible = matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}');
            if c.is_control() || bidi || invisible { ' ' } else { c }
        })
        .collect();
    let trimmed = mapped.trim();
    match trimmed.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", trimmed[..i].trim_end()),
        None => trimmed.to_owned(),
    }
}

/// Untrusted text as an inline code span that nothing inside can end early.
pub fn code(s: &str) -> String {
    let text = clean(s, MAX_TEXT_CHARS);
    if text.is_empty() {
        return "(none)".to_owned();
    }
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest + 1);
    // A span that starts or ends with a backtick needs a space of padding, which markdown
    // strips again.
    let pad = if text.starts_with('`') || text.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{text}{pad}{fence}")
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn fmt_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

fn render_message(ctx: &EventContext, a: &AccountRun, d: &Decision) -> String {
    let mut m = String::new();
    let account = code(account_label(&a.account_id));
    let window = format!("{} – {}", fmt_time(ctx.window_start), fmt_time(ctx.window_end));
    if d.action == Action::Recover {
        m.push_str(&format!("### AWS account {account} recovered\n\n"));
        m.push_str(&format!(
            "No new CloudTrail error records in account {account} (region {}, inspection {}) in {window}.\n",
            code(&ctx.region),
            code(&ctx.inspection_name)
        ));
        if let Some(f) = &d.fault {
            m.push_str(&format!(
                "The fault that began at {} lasted {}.\n",
                fmt_time(f.start_time),
                fmt_duration(f.duration_secs)
            ));
        }
    } else {
        m.push_str(&format!("### New CloudTrail errors in AWS account {account}\n\n"));
        m.push_str(&format!(
            "**{}** new CloudTrail error records in **{}** new error clusters (account {account}, region {}, \
             inspection {}, {window}). Level: **{}**.\n",
            a.new_error_records,
            a.new_clusters.len(),
            code(&ctx.region),
            code(&ctx.inspection_name),
            d.status.as_str(),
        ));
        match &d.silent_reason {
            Some(SilentReason::Silenced { until }) => m.push_str(&format!(
                "\nThis event is silent until {}: it is in the event history, nobody is notified of it, and its \
                 clusters are repeated in the next event that notifies.\n",
                fmt_time(*until)
            )),
            Some(SilentReason::LevelNotNotified { .. }) => m.push_str(
                "\nThis level is not among the inspection's notify levels: the event is in the event history, \
                 nobody is notified of it, and its clusters are repeated in the next event that notifies.\n",
            ),
            None => {}
        }
    }

    m.push_str("\n#### Access keys\n\n");
    if a.access_keys.is_empty() {
        m.push_str("No access key activity seen.\n");
    }
    for k in a.access_keys.iter().take(MAX_MESSAGE_KEYS) {
        m.push_str(&format!(
            "- {} last active {} by {} from {} ({}), {}{}\n",
            code(&k.access_key_id),
            fmt_time(k.last_seen),
            code(&k.principal_arn),
            code(&k.last_source_ip),
            code(&k.last_event_name),
            plural(k.total_events, "event", "events"),
            if k.active_in_window { "" } else { ", not active in this window" },
        ));
    }
    if a.access_keys.len() > MAX_MESSAGE_KEYS {
        m.push_str(&format!("- … and {} more access keys\n", a.access_keys.len() - MAX_MESSAGE_KEYS));
    }

    if d.action != Action::Recover {
        m.push_str("\n#### New error clusters\n\n");
        render_clusters(&mut m, ctx, &a.new_clusters);
    }
    if !d.carried.is_empty() || d.carried_omitted > 0 {
        m.push_str("\n#### Clusters from silenced events\n\n");
        render_clusters(&mut m, ctx, &d.carried);
        if d.carried_omitted > 0 {
            m.push_str(&format!("- … and {} more clusters that did not fit\n", d.carried_omitted));
        }
    }
    m.push_str(&format!("\n[Run details]({})\n", link_dest(&page_url(ctx, Page::Run(ctx.run_id)))));
    m
}

/// Lists clusters most severe first (then in the order given, largest first from the runner).
fn render_clusters(m: &mut String, ctx: &EventContext, clusters: &[EventCluster]) {
    let mut ordered: Vec<(NotifyLevel, &EventCluster)> =
        clusters.iter().map(|c| (c.level(&ctx.severity_rules), c)).collect();
    ordered.sort_by_key(|(l, _)| std::cmp::Reverse(l.rank()));
    for (level, c) in ordered.into_iter().take(MAX_MESSAGE_CLUSTERS) {
        let rules: Vec<String> =
            c.rules.iter().filter_map(|id| rules::rule(id)).map(|r| format!("{} {}", r.id, r.title)).collect();
        m.push_str(&format!(
            "- **{}** on {} {}: {}, level **{}**{}\n",
            code(&c.identity.error_code),
            code(&c.identity.event_source),
            code(&c.identity.event_name),
            plural(c.count, "record", "records"),
            EventStatus::from(level).as_str(),
            if rules.is_empty() { String::new() } else { format!(" ({})", rules.join("; ")) },
        ));
        m.push_str(&format!("  - Template: {}\n", code(&c.identity.template)));
        m.push_str(&format!(
            "  - Seen {} – {} in region {}{}\n",
            fmt_time(c.first_seen),
            fmt_time(c.last_seen),
            code(&c.identity.region),
            c.carried_from.map(|t| format!(", recorded {}", fmt_time(t))).unwrap_or_default(),
        ));
        if !c.top_principals.is_empty() {
            let ps: Vec<String> =
                c.top_principals.iter().map(|p| format!("{} ({})", code(&p.value), p.count)).collect();
            m.push_str(&format!("  - Top principals: {}\n", ps.join(", ")));
        }
        let mut links = Vec::new();
        if let Some(id) = c.cluster_id {
            links.push(format!("[Cluster details]({})", link_dest(&page_url(ctx, Page::Cluster(id)))));
        }
        if let Some(url) = insights_url(ctx, c) {
            links.push(format!("[Records in CloudWatch Logs Insights]({})", link_dest(&url)));
        }
        if !links.is_empty() {
            m.push_str(&format!("  - {}\n", links.join(" · ")));
        }
    }
    if clusters.len() > MAX_MESSAGE_CLUSTERS {
        m.push_str(&format!(
            "- … and {} more clusters (all are in the event detail)\n",
            clusters.len() - MAX_MESSAGE_CLUSTERS
        ));
    }
}

/// The URL of a page of this service's console: a share link, which opens without a token
/// until it expires, when the service signs links.
fn page_link(ctx: &EventContext, path: &str) -> String {
    match &ctx.share {
        Some(signer) => format!("{}{}", ctx.public_url, signer.sign(path)),
        None => format!("{}{path}", ctx.public_url),
    }
}

/// A URL made safe as a markdown link destination: spaces, controls, `<`, `>`, backticks,
/// quotes, backslashes and non-ASCII percent-encoded. Parentheses stay (markdown accepts them
/// when balanced, and only the console links have them, balanced); those from the configured
/// base URL are encoded.
fn link_dest(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut depth = 0i32;
    for c in url.chars() {
        let keep = c.is_ascii_graphic() && !matches!(c, '<' | '>' | '`' | '"' | '\\' | '[' | ']');
        match c {
            '(' => {
                depth += 1;
                out.push(c);
            }
            ')' if depth > 0 => {
                depth -= 1;
                out.push(c);
            }
            ')' => out.push_str("%29"),
            _ if keep => out.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    if depth > 0 {
        // Unbalanced: encode every parenthesis instead.
        return out.replace('(', "%28").replace(')', "%29");
    }
    out
}

/// The AWS console link to this cluster's records in CloudWatch Logs Insights (the log
/// groups' region, the cluster's time span ± 1 minute). `None` if the region is not a plain
/// region name or there are no log groups.
pub fn insights_url(ctx: &EventContext, c: &EventCluster) -> Option<String> {
    let region = ctx.region.as_str();
    if region.is_empty()
        || region.len() > 32
        || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || ctx.log_groups.is_empty()
    {
        return None;
    }
    let host = if region.starts_with("cn-") {
        format!("{region}.console.amazonaws.cn")
    } else if region.starts_with("us-gov-") {
        format!("{region}.console.amazonaws-us-gov.com")
    } else {
        format!("{region}.console.aws.amazon.com")
    };
    let id = &c.identity;
    let q = |s: &str| {
        let s = clean(s, 256);
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    };
    let mut filter =
        vec![format!("eventSource = {}", q(&id.event_source)), format!("eventName = {}", q(&id.event_name))];
    if id.error_code == crate::engine::record::CONSOLE_LOGIN_FAILURE {
        filter.push("(responseElements.ConsoleLogin = \"Failure\" or errorMessage = \"Failed authentication\")".into());
    } else {
        filter.push(format!("errorCode = {}", q(&id.error_code)));
    }
    if !id.account_id.is_empty() {
        filter.push(format!("recipientAccountId = {}", q(&id.account_id)));
    }
    let query = format!(
        "fields @timestamp, eventSource, eventName, errorCode, errorMessage, userIdentity.arn, sourceIPAddress\n\
         | filter {}\n| sort @timestamp desc\n| limit 100",
        filter.join(" and ")
    );
    let start = (c.first_seen - Duration::minutes(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let end = (c.last_seen + Duration::minutes(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let sources: String = ctx.log_groups.iter().map(|g| format!("~'{}", jsurl(g))).collect();
    let detail = format!(
        "~(end~'{}~start~'{}~timeType~'ABSOLUTE~tz~'UTC~editorString~'{}~source~({}))",
        jsurl(&end),
        jsurl(&start),
        jsurl(&query),
        sources
    );
    Some(format!("https://{host}/cloudwatch/home?region={region}#logsV2:logs-insights$3FqueryDetail$3D{detail}"))
}

/// A string encoded the way the console's JSURL state expects it: `[A-Za-z0-9_.-]` kept, `$`
/// as `!`, other chars as `*xx` (code < 256) or `**xxxx`.
fn jsurl(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.encode_utf16() {
        match char::from_u32(u32::from(c)) {
            Some(ch) if ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-') => out.push(ch),
            Some('$') => out.push('!'),
            _ if c < 0x100 => out.push_str(&format!("*{c:02x}")),
            _ => out.push_str(&format!("**{c:04x}")),
        }
    }
    out
}

fn cluster_json(ctx: &EventContext, c: &EventCluster) -> Value {
    let mut v = serde_json::to_value(c).expect("plain data serializes");
    v["level"] = json!(EventStatus::from(c.level(&ctx.severity_rules)).as_str());
    v["rule_titles"] = json!(
        c.rules
            .iter()
            .filter_map(|id| rules::rule(id))
            .map(|r| json!({"id": r.id, "title": r.title}))
            .collect::<Vec<_>>()
    );
    if let Some(id) = c.cluster_id {
        v["url"] = json!(page_url(ctx, Page::Cluster(id)));
    }
    if let Some(u) = insights_url(ctx, c) {
        v["insights_url"] = json!(u);
    }
    v
}

/// A page of this service an event links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Run(Uuid),
    Cluster(Uuid),
}

/// The URL an event links a page of this service with: the console's page, signed when a
/// share key is configured. Every such link of an event (message, detail, report) is made
/// here, so how they are made can change in this one place.
pub fn page_url(ctx: &EventContext, page: Page) -> String {
    match page {
        Page::Run(id) => page_link(ctx, &format!("/console/runs/{id}")),
        Page::Cluster(id) => page_link(ctx, &format!("/console/clusters/{id}")),
    }
}

/// `df_event_report`: the original inspection's event detail as data, in its four parts
/// (guance-docs `monitoring/bot-obs/aws_ak_errorlog.md`, "事件详情"): the overview; the
/// account's new CloudTrail error records ("Cloudtrail"); its access keys' last activity
/// ("AK 最后活跃时间"); the new error clusters with links ("新增错误"). Guance documents the
/// field only as "智能监控报告数据", so the shape is this service's, versioned.
pub fn report(ctx: &EventContext, a: &AccountRun, d: &Decision, title: &str) -> Value {
    let keys: Vec<Value> = a
        .access_keys
        .iter()
        .map(|k| {
            json!({
                "access_key_id": k.access_key_id,
                "last_active": k.last_seen,
                "principal_arn": k.principal_arn,
                "source_ip": k.last_source_ip,
                "last_event_name": k.last_event_name,
                "events": k.total_events,
                "active_in_window": k.active_in_window,
            })
        })
        .collect();
    let cluster = |c: &EventCluster| {
        let level = EventStatus::from(c.level(&ctx.severity_rules));
        let rules: Vec<Value> =
            c.rules.iter().filter_map(|id| rules::rule(id)).map(|r| json!({"id": r.id, "title": r.title})).collect();
        let mut links = serde_json::Map::new();
        if let Some(id) = c.cluster_id {
            links.insert("details".into(), json!(page_url(ctx, Page::Cluster(id))));
        }
        if let Some(url) = insights_url(ctx, c) {
            links.insert("records".into(), json!(url));
        }
        json!({
            "error_code": c.identity.error_code,
            "event_source": c.identity.event_source,
            "event_name": c.identity.event_name,
            "region": c.identity.region,
            "template": c.identity.template,
            "count": c.count,
            "first_seen": c.first_seen,
            "last_seen": c.last_seen,
            "level": level.as_str(),
            "rules": rules,
            "top_principals": c.top_principals,
            "carried_from": c.carried_from,
            "links": links,
        })
    };
    json!({
        "version": 1,
        "overview": {
            "title": title,
            "status": d.status.as_str(),
            "silent": d.is_silent(),
            "inspection": {"id": ctx.inspection_id, "name": ctx.inspection_name},
            "account_id": a.account_id,
            "region": ctx.region,
            "log_groups": ctx.log_groups,
            "window": {"start": ctx.window_start, "end": ctx.window_end},
            "fault": d.fault,
        },
        "cloudtrail": {
            "new_error_records": a.new_error_records,
            "new_clusters": a.new_clusters.len(),
            "error_records": a.error_records,
        },
        "access_keys": keys,
        "new_errors": a.new_clusters.iter().map(cluster).collect::<Vec<_>>(),
        "carried_errors": d.carried.iter().map(cluster).collect::<Vec<_>>(),
        "links": {"run": page_url(ctx, Page::Run(ctx.run_id))},
    })
}

fn detail(ctx: &EventContext, a: &AccountRun, d: &Decision) -> Value {
    json!({
        "inspection": {"id": ctx.inspection_id, "name": ctx.inspection_name},
        "run_id": ctx.run_id,
        "run_url": page_url(ctx, Page::Run(ctx.run_id)),
        "account_id": a.account_id,
        "region": ctx.region,
        "log_groups": ctx.log_groups,
        "window": {"start": ctx.window_start, "end": ctx.window_end},
        "action": d.action,
        "status": d.status,
        "silent_reason": d.silent_reason,
        "fault": d.fault,
        "new_error_records": a.new_error_records,
        "error_records": a.error_records,
        "new_clusters": a.new_clusters.iter().map(|c| cluster_json(ctx, c)).collect::<Vec<_>>(),
        "carried_clusters": d.carried.iter().map(|c| cluster_json(ctx, c)).collect::<Vec<_>>(),
        "carried_omitted": d.carried_omitted,
        "access_keys": a.access_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guance::alerting::{FaultStatus, OpenFault};
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap() + Duration::minutes(min)
    }

    fn ctx() -> EventContext {
        EventContext {
            inspection_id: Uuid::from_u128(1),
            inspection_name: "prod trail".into(),
            run_id: Uuid::from_u128(2),
            ref_key: "cloudtrail-inspector-00000000000000000000000000000001".into(),
            checker_name: "AWS CloudTrail anomalous event inspection (prod trail)".into(),
            checker_id: Some("rul_0123".into()),
            func_id: "cloudtrail_inspector.inspect".into(),
            region: "us-east-1".into(),
            log_groups: vec!["aws-cloudtrail-logs-1".into(), "/org/trail#2".into()],
            window_start: t(0),
            window_end: t(60),
            exec_mode: ExecMode::Crontab,
            alert_policy_ids: vec!["altpl_a".into()],
            public_url: "https://inspector.example.com".into(),
            share: None,
            severity_rules: SeverityRules::default(),
        }
    }

    fn cluster(code: &str, rules: &[&str]) -> EventCluster {
        EventCluster {
            cluster_id: Some(Uuid::from_u128(9)),
            identity: ClusterIdentity {
                fingerprint: format!("fp-{code}"),
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                event_source: "s3.amazonaws.com".into(),
                event_name: "GetObject".into(),
                error_code: code.into(),
                template: "Access Denied".into(),
            },
            count: 4,
            first_seen: t(5),
            last_seen: t(20),
            top_principals: vec![Counted { value: "arn:aws:iam::123456789012:user/alice".into(), count: 4 }],
            top_source_ips: vec![],
            sample_message: "Access Denied".into(),
            rules: rules.iter().map(|s| (*s).to_owned()).collect(),
            carried_from: None,
        }
    }

    #[test]
    fn an_event_takes_the_most_severe_level_of_its_clusters() {
        let r = SeverityRules::default();
        let cs = vec![cluster("NoSuchKey", &[]), cluster("AccessDenied", &["CloudWatch.2"])];
        assert_eq!(event_level(&r, &cs), Some(NotifyLevel::Error));
        assert_eq!(cs[0].level(&r), NotifyLevel::Warning);
        assert_eq!(event_level(&r, &[]), None);
    }

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let a = event_id(Uuid::from_u128(1), Uuid::from_u128(2), "123456789012");
        assert_eq!(a, event_id(Uuid::from_u128(1), Uuid::from_u128(2), "123456789012"));
        assert!(a.starts_with("event-") && a.len() == 38, "{a}");
        assert_ne!(a, event_id(Uuid::from_u128(1), Uuid::from_u128(3), "123456789012"));
        assert_ne!(a, event_id(Uuid::from_u128(1), Uuid::from_u128(2), "123456789013"));
        assert_ne!(a, event_id(Uuid::from_u128(4), Uuid::from_u128(2), "123456789012"));
    }

    #[test]
    fn code_spans_cannot_be_escaped() {
        for (input, want) in [
            ("plain", "`plain`"),
            ("has `tick`", "`` has `tick` ``"),
            ("```", "```` ``` ````"),
            ("`start", "`` `start ``"),
            ("line\nbreak\r\n# heading", "`line break  # heading`"),
            ("a\u{202e}b\u{2066}c", "`a b c`"),
            ("  spaced  ", "`spaced`"),
            ("", "(none)"),
            ("\n\t", "(none)"),
        ] {
            assert_eq!(code(input), want, "{input:?}");
        }
        let long = "x".repeat(1000);
        assert_eq!(code(&long).chars().count(), MAX_TEXT_CHARS + 1 + 2);
    }

    #[test]
    fn links_are_safe_destinations() {
        assert_eq!(link_dest("https://a.example/x y<z>"), "https://a.example/x%20y%3Cz%3E");
        assert_eq!(link_dest("https://a/(b)"), "https://a/(b)");
        assert_eq!(link_dest("https://a/b)"), "https://a/b%29");
        assert_eq!(link_dest("https://a/(b"), "https://a/%28b");
        assert_eq!(link_dest("https://a/ü"), "https://a/%C3%BC");
    }

    #[test]
    fn insights_links_point_at_the_log_groups_and_the_cluster() {
        let c = cluster("AccessDenied", &["CloudWatch.2"]);
        let url = insights_url(&ctx(), &c).unwrap();
        assert!(url.starts_with(
            "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:logs-insights$3FqueryDetail$3D~(end~'2024-05-01T10*3a21*3a00.000Z~start~'2024-05-01T10*3a04*3a00.000Z~"
        ), "{url}");
        assert!(url.ends_with("~source~(~'aws-cloudtrail-logs-1~'*2forg*2ftrail*232))"), "{url}");
        assert!(url.contains("errorCode*20*3d*20*22AccessDenied*22"), "{url}");
        assert!(url.contains("recipientAccountId*20*3d*20*22123456789012*22"), "{url}");
        assert!(!url.contains(' ') && !url.contains('"') && !url.contains('\n'));
        // Hostile values stay inside the encoded query.
        let mut evil = cluster("x\" | display @message | filter \"1", &[]);
        evil.identity.event_name = "a)](javascript:alert(1))".into();
        let url = insights_url(&ctx(), &evil).unwrap();
        assert!(url.contains("*5c*22"), "quotes are escaped in the query: {url}");
        assert_eq!(url.matches('(').count(), url.matches(')').count(), "{url}");
        assert!(!url.contains("javascript:"), "{url}");
        let mut cx = ctx();
        cx.region = "us-east-1)](x".into();
        assert_eq!(insights_url(&cx, &c), None);
        cx.region = "cn-north-1".into();
        assert!(insights_url(&cx, &c).unwrap().starts_with("https://cn-north-1.console.amazonaws.cn/"));
    }

    fn send_decision(clusters: &[EventCluster]) -> Decision {
        alerting::decide(
            &DimensionState::default(),
            RunOutcome::NewClusters { level: NotifyLevel::Error, clusters: clusters.to_vec() },
            &AlertPolicy::default(),
            &event_id(Uuid::from_u128(1), Uuid::from_u128(2), "123456789012"),
            t(61),
        )
    }

    fn account(clusters: Vec<EventCluster>) -> AccountRun {
        AccountRun {
            account_id: "123456789012".into(),
            new_error_records: clusters.iter().map(|c| c.count).sum(),
            error_records: 50,
            new_clusters: clusters,
            access_keys: vec![AccessKeyView {
                access_key_id: "AKIAEXAMPLEEXAMPLE01".into(),
                principal_arn: "arn:aws:iam::123456789012:user/alice".into(),
                account_id: "123456789012".into(),
                first_seen: t(1),
                last_seen: t(30),
                last_event_name: "GetObject".into(),
                last_source_ip: "203.0.113.7".into(),
                total_events: 17,
                active_in_window: true,
            }],
        }
    }

    #[test]
    fn a_sent_event_has_every_field() {
        let clusters = vec![cluster("AccessDenied", &["CloudWatch.2"])];
        let d = send_decision(&clusters);
        let ev = build_event(&ctx(), &account(clusters), &d, t(61));
        assert_eq!(ev.status, EventStatus::Error);
        assert!(ev.deliver && !ev.is_silent);
        assert_eq!(ev.title, "[prod trail] 1 new CloudTrail error cluster (4 records) in AWS account 123456789012");
        let p = ev.to_point();
        assert_eq!(p.measurement(), "monitor");
        assert_eq!(
            p.tags().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
            vec![
                ("account_id", "123456789012"),
                ("inspection_id", "00000000-0000-0000-0000-000000000001"),
                ("region", "us-east-1")
            ]
        );
        use crate::guance::lineproto::FieldValue as F;
        let s = |k: &str| match p.get(k) {
            Some(F::Str(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        let i = |k: &str| match p.get(k) {
            Some(F::Int(n)) => *n,
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(s("df_source"), "monitor");
        assert_eq!(s("df_monitor_type"), "bot_obs");
        assert_eq!(s("df_status"), "error");
        assert_eq!(s("df_sub_status"), "error");
        assert_eq!(s("df_event_id"), ev.event_id);
        assert_eq!(s("inspection_name"), "prod trail", "the name is a field, not a dimension");
        let event_ref = s("df_monitor_checker_event_ref");
        assert_eq!(event_ref.len(), 32);
        assert!(event_ref.bytes().all(|b| b.is_ascii_hexdigit()), "{event_ref}");
        assert_eq!(s("df_fault_id"), ev.event_id, "the first event of a fault names it");
        assert_eq!(s("df_fault_status"), "fault");
        assert_eq!(i("df_fault_start_time"), t(61).timestamp());
        assert_eq!(i("df_fault_duration"), 0);
        assert_eq!(i("df_check_range_start"), t(0).timestamp());
        assert_eq!(i("df_check_range_end"), t(60).timestamp());
        assert_eq!(i("df_date_range"), 3600);
        assert_eq!(s("df_is_silent"), "false");
        assert_eq!(s("df_crontab_exec_mode"), "crontab");
        assert_eq!(s("df_alert_policy_ids"), r#"["altpl_a"]"#);
        assert_eq!(s("df_monitor_ref_key"), ctx().ref_key);
        assert_eq!(s("df_monitor_checker_name"), ctx().checker_name);
        assert_eq!(s("df_monitor_checker_id"), "rul_0123");
        assert_eq!(
            serde_json::from_str::<Value>(&s("df_dimension_tags")).unwrap(),
            json!({"account_id": "123456789012", "inspection_id": "00000000-0000-0000-0000-000000000001", "region": "us-east-1"})
        );
        let report: Value = serde_json::from_str(&s("df_event_report")).unwrap();
        assert_eq!(report["version"], 1);
        assert_eq!(report["overview"]["account_id"], "123456789012");
        assert_eq!(report["overview"]["inspection"]["name"], "prod trail");
        assert_eq!(report["cloudtrail"]["new_error_records"], 4);
        assert_eq!(report["access_keys"][0]["access_key_id"], "AKIAEXAMPLEEXAMPLE01");
        assert_eq!(report["access_keys"][0]["last_active"], "2024-05-01T10:30:00Z");
        assert_eq!(report["new_errors"][0]["error_code"], "AccessDenied");
        assert_eq!(
            report["new_errors"][0]["links"]["details"],
            "https://inspector.example.com/console/clusters/00000000-0000-0000-0000-000000000009"
        );
        assert!(report["new_errors"][0]["links"]["records"].as_str().unwrap().contains("logs-insights"));
        assert_eq!(
            report["links"]["run"],
            "https://inspector.example.com/console/runs/00000000-0000-0000-0000-000000000002"
        );
        let detail: Value = serde_json::from_str(&s("df_event_detail")).unwrap();
        assert_eq!(detail["new_clusters"][0]["level"], "error");
        assert_eq!(detail["new_clusters"][0]["rule_titles"][0]["id"], "CloudWatch.2");
        assert_eq!(detail["fault"]["id"], ev.event_id);
        let msg = s("df_message");
        for part in [
            "**4** new CloudTrail error records",
            "#### Access keys",
            "`AKIAEXAMPLEEXAMPLE01` last active 2024-05-01 10:30:00 UTC by `arn:aws:iam::123456789012:user/alice` from `203.0.113.7`",
            "#### New error clusters",
            "- **`AccessDenied`** on `s3.amazonaws.com` `GetObject`: 4 records, level **error** (CloudWatch.2 Unauthorized API calls)",
            "  - Template: `Access Denied`",
            "[Cluster details](https://inspector.example.com/console/clusters/00000000-0000-0000-0000-000000000009)",
            "[Records in CloudWatch Logs Insights](https://us-east-1.console.aws.amazon.com/",
        ] {
            assert!(msg.contains(part), "missing {part:?} in\n{msg}");
        }
        let line = ev.to_line_protocol().unwrap();
        assert!(line.starts_with(
            "monitor,account_id=123456789012,inspection_id=00000000-0000-0000-0000-000000000001,region=us-east-1 df_source=\"monitor\","
        ));
        assert!(line.ends_with(&format!(" {}", t(61).timestamp_nanos_opt().unwrap())));
    }

    #[test]
    fn hostile_record_text_stays_inside_code_spans() {
        let mut c = cluster("AccessDenied", &["CloudWatch.2"]);
        c.identity.template =
            "x` **bold** [link](http://evil.example) <img src=x onerror=alert(1)>\n# Heading\n- item |a|b|".into();
        c.top_principals = vec![Counted { value: "``arn``\r\n> quote".into(), count: 1 }];
        c.identity.event_source = "\u{202e}moc.live".into();
        let d = send_decision(std::slice::from_ref(&c));
        let mut a = account(vec![c]);
        a.access_keys[0].principal_arn = "]) [x](javascript:alert(1)) `".into();
        let ev = build_event(&ctx(), &a, &d, t(61));
        let msg = &ev.message;
        assert!(msg.contains("  - Template: ``x` **bold** [link](http://evil.example) <img src=x onerror=alert(1)> # Heading - item |a|b|``"), "{msg}");
        assert!(msg.contains("``` ``arn``  > quote ```"), "{msg}");
        assert!(!msg.contains('\u{202e}'));
        assert!(msg.contains("`` ]) [x](javascript:alert(1)) ` ``"), "{msg}");
        // No line of the message starts with record text.
        for line in msg.lines() {
            assert!(!line.starts_with("# ") && !line.starts_with("> ") && !line.starts_with("<"), "{line}");
        }
        ev.to_line_protocol().unwrap();
    }

    #[test]
    fn tag_values_are_made_encodable() {
        let mut cx = ctx();
        cx.region = "ends with backslash \\".into();
        let clusters = vec![cluster("AccessDenied", &[])];
        let d = send_decision(&clusters);
        let mut a = account(clusters);
        a.account_id = String::new();
        let ev = build_event(&cx, &a, &d, t(61));
        let p = ev.to_point();
        assert_eq!(p.tags().get("region").map(String::as_str), Some("ends with backslash /"));
        assert!(!p.tags().contains_key("account_id"), "empty tags are left out");
        assert_eq!(ev.dimension_tags["region"], "ends with backslash \\", "the JSON keeps the exact text");
        assert!(ev.title.contains("(unknown)"));
        ev.to_line_protocol().unwrap();
    }

    #[test]
    fn recovery_and_silent_events() {
        let prev = DimensionState {
            fault: Some(OpenFault {
                id: "event-first".into(),
                started_at: t(-120),
                last_sent_at: t(-120),
                last_sent_status: EventStatus::Critical,
            }),
            carried: vec![EventCluster { carried_from: Some(t(-60)), ..cluster("NoSuchKey", &[]) }],
            carried_omitted: 0,
        };
        let out = evaluate(&ctx(), &account(vec![]), &prev, &AlertPolicy::default(), true, t(61));
        let ev = out.event.unwrap();
        assert_eq!(out.decision.action, Action::Recover);
        assert_eq!(ev.status, EventStatus::Ok);
        assert!(ev.deliver);
        let f = ev.fault.clone().unwrap();
        assert_eq!(
            (f.id.as_str(), f.status, f.start_time, f.duration_secs),
            ("event-first", FaultStatus::Ok, t(-120), 181 * 60)
        );
        assert!(ev.title.ends_with("recovered"), "{}", ev.title);
        assert!(ev.message.contains("lasted 3h 1m"), "{}", ev.message);
        assert!(ev.message.contains("#### Clusters from silenced events"), "{}", ev.message);
        assert!(ev.message.contains("recorded 2024-05-01 09:00:00 UTC"), "{}", ev.message);
        let p = ev.to_point();
        assert_eq!(p.get("df_fault_status"), Some(&crate::guance::lineproto::FieldValue::Str("ok".into())));

        // Within the silence of a critical event, an error is recorded silently.
        let prev = DimensionState { carried: vec![], ..prev };
        let a = account(vec![cluster("AccessDenied", &["CloudWatch.2"])]);
        let out = evaluate(
            &ctx(),
            &a,
            &DimensionState { fault: prev.fault.clone().map(|f| OpenFault { last_sent_at: t(30), ..f }), ..prev },
            &AlertPolicy::default(),
            true,
            t(61),
        );
        let ev = out.event.unwrap();
        assert!(ev.is_silent && ev.deliver, "silent events go to Guance's history too");
        assert_eq!(ev.to_point().get("df_is_silent"), Some(&crate::guance::lineproto::FieldValue::Str("true".into())));
        assert!(ev.message.contains("This event is silent until 2024-05-01 11:30:00 UTC"), "{}", ev.message);
        assert_eq!(ev.report["overview"]["silent"], true);
        assert_eq!(out.decision.next.carried.len(), 1);

        // A level the inspection does not notify on is recorded, and says so.
        let only_critical = AlertPolicy { notify_levels: vec![NotifyLevel::Critical], ..AlertPolicy::default() };
        let out = evaluate(&ctx(), &a, &DimensionState::default(), &only_critical, true, t(61));
        let ev = out.event.unwrap();
        assert!(ev.is_silent && ev.deliver && ev.fault.is_none());
        assert!(ev.message.contains("not among the inspection's notify levels"), "{}", ev.message);

        // A failed read concludes nothing.
        let out = evaluate(&ctx(), &a, &DimensionState::default(), &AlertPolicy::default(), false, t(61));
        assert!(out.event.is_none());
        assert_eq!(out.decision.action, Action::Nothing);
    }

    #[test]
    fn long_lists_are_cut_in_the_message_but_kept_in_the_detail() {
        let clusters: Vec<EventCluster> = (0..MAX_MESSAGE_CLUSTERS + 5)
            .map(|i| {
                let mut c = cluster("AccessDenied", &["CloudWatch.2"]);
                c.identity.fingerprint = format!("fp{i}");
                c
            })
            .collect();
        let d = send_decision(&clusters);
        let ev = build_event(&ctx(), &account(clusters), &d, t(61));
        assert!(ev.message.contains("- … and 5 more clusters"), "{}", ev.message);
        assert_eq!(ev.detail["new_clusters"].as_array().unwrap().len(), MAX_MESSAGE_CLUSTERS + 5);
    }

    #[test]
    fn events_round_trip_through_json_for_the_outbox() {
        let clusters = vec![cluster("AccessDenied", &["CloudWatch.2"])];
        let d = send_decision(&clusters);
        let ev = build_event(&ctx(), &account(clusters), &d, t(61));
        let back: GuanceEvent = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
        assert_eq!(back.to_line_protocol().unwrap(), ev.to_line_protocol().unwrap());
    }

    #[test]
    fn the_event_ref_follows_the_checker_and_the_dimension_not_the_name() {
        let id = Uuid::from_u128(1);
        let tags = dimension_tags(id, "123456789012", "us-east-1");
        let r = checker_event_ref("cloudtrail-inspector-1", &tags);
        assert_eq!(r, checker_event_ref("cloudtrail-inspector-1", &tags.clone()), "stable");
        assert_ne!(r, checker_event_ref("cloudtrail-inspector-2", &tags), "per checker");
        assert_ne!(r, checker_event_ref("cloudtrail-inspector-1", &dimension_tags(id, "123456789013", "us-east-1")));
        // A renamed inspection: the same dimension, the same ref.
        let clusters = vec![cluster("AccessDenied", &[])];
        let d = send_decision(&clusters);
        let before = build_event(&ctx(), &account(clusters.clone()), &d, t(61));
        let mut renamed = ctx();
        renamed.inspection_name = "renamed".into();
        renamed.checker_name = "renamed".into();
        let after = build_event(&renamed, &account(clusters), &d, t(61));
        assert_eq!(before.dimension_tags, after.dimension_tags);
        assert_eq!(
            before.to_point().get("df_monitor_checker_event_ref"),
            after.to_point().get("df_monitor_checker_event_ref")
        );
    }

    #[test]
    fn events_stored_before_the_report_existed_still_encode() {
        let clusters = vec![cluster("AccessDenied", &[])];
        let ev = build_event(&ctx(), &account(clusters.clone()), &send_decision(&clusters), t(61));
        let mut old = serde_json::to_value(&ev).unwrap();
        old.as_object_mut().unwrap().remove("report");
        let back: GuanceEvent = serde_json::from_value(old).unwrap();
        assert!(back.report.is_null());
        assert_eq!(back.to_point().get("df_event_report"), None);
        back.to_line_protocol().unwrap();
    }

    #[test]
    fn durations_read_well() {
        for (s, want) in [(0, "0s"), (59, "59s"), (61, "1m 1s"), (3600, "1h 0m"), (3 * 86400 + 125, "72h 2m")] {
            assert_eq!(fmt_duration(s), want);
        }
    }
}
