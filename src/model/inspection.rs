//! An inspection: which CloudTrail log groups to watch, with which AWS access, and how.
//!
//! The API input types (`NewInspection`, `InspectionPatch`) are validated into
//! [`InspectionSettings`] (stored as JSON) plus [`AwsSecrets`] (stored apart, never returned).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::alerting::{AlertPolicy, SeverityRules};
use super::event::GuanceSync;
use super::schedule::Schedule;
use super::validation::{FieldErrors, is_invisible};
use super::{Secret, run::RunSummary};
use unicode_normalization::UnicodeNormalization;

/// How error records are fetched from CloudWatch Logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// FilterLogEvents with a JSON filter pattern: raw error records cross the wire.
    #[default]
    FilterLogEvents,
    /// Logs Insights `stats … by`: AWS aggregates, far fewer bytes and calls.
    LogsInsights,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::FilterLogEvents => "filter_log_events",
            Strategy::LogsInsights => "logs_insights",
        }
    }
}

/// Where an inspection reads CloudTrail records from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSettings {
    /// The inspection's `log_groups` in CloudWatch Logs (the default).
    #[default]
    CloudwatchLogs,
    /// CloudTrail files under a directory on the service's machine (as delivered to S3:
    /// `{"Records": [...]}`, `.json` or `.json.gz`; also JSON arrays and JSON lines).
    Files {
        /// Directory (or file) to read; must lie under the service's `--files-root`.
        path: String,
    },
    /// The bucket a trail delivers to, read where CloudTrail writes:
    /// `<prefix>/AWSLogs/[o-<org>/]<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz`. Files
    /// are selected by delivery time; `aws` says how to reach the bucket (its region).
    S3 {
        /// Bucket name (3–63 lowercase letters, digits, `.` and `-`).
        bucket: String,
        /// The trail's S3 key prefix: what comes before `AWSLogs/` (empty for none).
        #[serde(default)]
        prefix: String,
        /// 12-digit accounts to read; absent: every account found under `AWSLogs/`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accounts: Option<Vec<String>>,
        /// Regions to read; absent: every region found for each account.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        regions: Option<Vec<String>>,
    },
}

impl SourceSettings {
    pub fn files_path(&self) -> Option<&str> {
        match self {
            SourceSettings::Files { path } => Some(path),
            SourceSettings::CloudwatchLogs | SourceSettings::S3 { .. } => None,
        }
    }

    /// What a run of this source reads: a file source has one "group", its directory; an S3
    /// source one, `s3://bucket/prefix` (all its accounts and regions share one watermark,
    /// as delivery time is the bucket's clock); CloudWatch Logs reads `log_groups`.
    pub fn groups(&self, log_groups: &[String]) -> Vec<String> {
        match self {
            SourceSettings::Files { path } => vec![path.to_string()],
            SourceSettings::S3 { bucket, prefix, .. } => vec![s3_url(bucket, prefix)],
            SourceSettings::CloudwatchLogs => log_groups.to_vec(),
        }
    }

    /// Whether this source reads its own list of places rather than `log_groups`.
    pub fn names_its_groups(&self) -> bool {
        !matches!(self, SourceSettings::CloudwatchLogs)
    }
}

/// `s3://bucket/prefix` (or `s3://bucket` without a prefix): how runs and reports name an S3
/// source.
pub fn s3_url(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() { format!("s3://{bucket}") } else { format!("s3://{bucket}/{prefix}") }
}

/// Whether `name` follows S3's rules for bucket names (general purpose buckets).
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

/// Checks an S3 source's fields and puts its prefix in the one form runs use (no slash at
/// either end).
fn validate_s3(source: &mut SourceSettings, errors: &mut FieldErrors) {
    let SourceSettings::S3 { bucket, prefix, accounts, regions } = source else { return };
    if !valid_bucket_name(bucket) {
        errors.add(
            "source.bucket",
            "must be an S3 bucket name: 3–63 lowercase letters, digits, `.` and `-`, starting and ending with a \
             letter or digit",
        );
    }
    let trimmed = prefix.trim_matches('/').to_string();
    if trimmed.len() > 900 || trimmed.chars().any(|c| c.is_control() || is_invisible(c)) || trimmed.contains("//") {
        errors.add("source.prefix", "must be at most 900 printable characters, without empty path segments");
    } else if trimmed == "AWSLogs" || trimmed.ends_with("/AWSLogs") || trimmed.contains("/AWSLogs/") {
        errors.add(
            "source.prefix",
            "is the trail's S3 key prefix, the part before `AWSLogs/` (empty when the trail has none)",
        );
    }
    *prefix = trimmed;
    if let Some(list) = accounts {
        if list.is_empty() || list.len() > 1000 {
            errors.add("source.accounts", "must list 1–1000 accounts, or be left out to read every account");
        } else if let Some(bad) = list.iter().find(|a| a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit())) {
            errors.add("source.accounts", format!("must be 12-digit account ids ({bad:?} is not)"));
        }
        list.sort();
        list.dedup();
    }
    if let Some(list) = regions {
        if list.is_empty() || list.len() > 100 {
            errors.add("source.regions", "must list 1–100 regions, or be left out to read every region");
        } else if let Some(bad) = list.iter().find(|r| !valid_region(r)) {
            errors.add("source.regions", format!("must be AWS region names such as `us-east-1` ({bad:?} is not)"));
        }
        list.sort();
        list.dedup();
    }
}

/// AWS access of an inspection, without its secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
pub struct AwsSettings {
    /// Region of the log groups, e.g. `us-east-1`.
    pub region: String,
    /// The 12-digit account the log groups live in (informational; used in links and quotas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Role to assume before reading the log groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// External id to pass when assuming `role_arn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Static access key id; with `secret_access_key`. Absent: the default credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Endpoint to send CloudWatch Logs calls to instead of AWS (LocalStack, a test server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

/// The write-only part of the AWS access.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AwsSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
}

/// Records left out of clustering, e.g. expected `ThrottlingException`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct IgnoreSettings {
    /// Error codes to ignore (exact; `ConsoleLoginFailure` for failed sign-ins).
    #[serde(default)]
    pub error_codes: Vec<String>,
    /// Event sources to ignore, e.g. `s3.amazonaws.com`.
    #[serde(default)]
    pub event_sources: Vec<String>,
    /// Principal ARN globs to ignore (`*` any run of characters, `?` one character).
    #[serde(default)]
    pub principal_arns: Vec<String>,
}

/// Everything configurable about an inspection except its name, description, enabled flag
/// and secrets. Stored as one JSON document so new settings need no schema change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectionSettings {
    #[serde(default)]
    pub source: SourceSettings,
    pub log_groups: Vec<String>,
    pub aws: AwsSettings,
    pub lookback_minutes: u32,
    pub delivery_delay_minutes: u32,
    pub baseline_days: u32,
    pub max_catch_up_minutes: u32,
    pub strategy: Strategy,
    #[serde(default)]
    pub ignore: IgnoreSettings,
    #[serde(default)]
    pub alert_policy: AlertPolicy,
    /// How long a Func-style sync call waits for the run (`DFF.API(timeout=…)`); settings
    /// stored before this field existed read as the default.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u32,
    /// 5-field cron expression of the built-in scheduler.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// IANA time zone the `schedule` is read in.
    #[serde(default = "default_schedule_timezone")]
    pub schedule_timezone: String,
    /// How new clusters map to Guance event levels.
    #[serde(default)]
    pub severity_rules: SeverityRules,
}

/// The original inspection's `timeout=900`.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 900;
/// The original inspection's `fixed_crontab='0 * * * *'`.
pub const DEFAULT_SCHEDULE: &str = "0 * * * *";
pub const DEFAULT_SCHEDULE_TIMEZONE: &str = "UTC";

fn default_timeout_seconds() -> u32 {
    DEFAULT_TIMEOUT_SECONDS
}

fn default_schedule() -> String {
    DEFAULT_SCHEDULE.to_string()
}

fn default_schedule_timezone() -> String {
    DEFAULT_SCHEDULE_TIMEZONE.to_string()
}

pub const DEFAULT_LOOKBACK_MINUTES: u32 = 60;
pub const DEFAULT_DELIVERY_DELAY_MINUTES: u32 = 10;
pub const DEFAULT_BASELINE_DAYS: u32 = 7;
pub const DEFAULT_MAX_CATCH_UP_MINUTES: u32 = 24 * 60;
pub const MAX_LOG_GROUPS: usize = 50;
const MAX_IGNORE_ENTRIES: usize = 100;

/// A stored inspection.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub settings: InspectionSettings,
    pub secrets: AwsSecrets,
    /// Why the stored credentials could not be opened (a lost encryption key), if so.
    pub secrets_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_run: Option<RunSummary>,
    /// The credential of the Func-style trigger URLs, on the inspection just created or
    /// whose id was just rotated; the store keeps only its hash, so it is None otherwise.
    pub trigger_id: Option<Secret>,
    /// Its registration in Guance.
    pub guance: GuanceSync,
}

/// The key an inspection is registered under in Guance: stable for its lifetime.
pub fn guance_ref_key(id: Uuid) -> String {
    format!("cloudtrail-inspector-{id}")
}

/// AWS access as the API accepts it: secrets may be given, never read back.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsInput {
    /// Region of the log groups, e.g. `us-east-1`.
    pub region: Option<String>,
    /// The 12-digit account id.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub account_id: Option<Option<String>>,
    /// Role to assume (`arn:aws:iam::<account>:role/<name>`).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub role_arn: Option<Option<String>>,
    /// External id for the role.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// Static access key id (with `secret_access_key`).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub access_key_id: Option<Option<String>>,
    /// Static secret access key. Write-only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, write_only)]
    pub secret_access_key: Option<Option<Secret>>,
    /// Session token of temporary credentials. Write-only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, write_only)]
    pub session_token: Option<Option<Secret>>,
    /// Send CloudWatch Logs calls here instead of AWS (LocalStack, a test server).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub endpoint_url: Option<Option<String>>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`) so that a
/// PATCH can clear a value.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `POST /api/v1/inspections`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInspection {
    /// Unique name, 1–200 characters.
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Where records come from; default `{"kind": "cloudwatch_logs"}` (the `log_groups`).
    #[serde(default)]
    pub source: Option<SourceSettings>,
    /// 1–50 CloudWatch Logs log groups that receive CloudTrail.
    #[serde(default)]
    pub log_groups: Option<Vec<String>>,
    /// The original inspection's form of `log_groups`: one log group name per line.
    #[serde(default)]
    pub configs: Option<String>,
    pub aws: Option<AwsInput>,
    /// Length of a first run's window (1–1440, default 60).
    #[serde(default)]
    pub lookback_minutes: Option<u32>,
    /// How far behind now a window ends, for CloudTrail's delivery lag (0–120, default 10).
    #[serde(default)]
    pub delivery_delay_minutes: Option<u32>,
    /// Days read before the first run so old errors are not reported as new (0–90, default 7).
    #[serde(default)]
    pub baseline_days: Option<u32>,
    /// Longest span a run catches up after a pause (60–10080, default 1440); older is skipped and recorded.
    #[serde(default)]
    pub max_catch_up_minutes: Option<u32>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub ignore: Option<IgnoreSettings>,
    #[serde(default)]
    pub alert_policy: Option<AlertPolicy>,
    /// How long a Func-style sync call (`/api/v1/al/…`) waits for the run, 1–3600 s (default 900).
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    /// When the built-in scheduler runs the inspection: 5-field cron (minute hour day-of-month
    /// month day-of-week), default `0 * * * *`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// IANA time zone of `schedule`, e.g. `Asia/Shanghai` (default `UTC`).
    #[serde(default)]
    pub schedule_timezone: Option<String>,
    /// How new clusters map to Guance event levels. Default: `critical` for CIS
    /// CloudWatch.1/5/6/7 (root use, trail changes, console sign-in failures, KMS key
    /// disabling), `error` for unauthorized calls (CloudWatch.2), `warning` otherwise.
    #[serde(default)]
    pub severity_rules: Option<SeverityRules>,
}

/// Body of `PATCH /api/v1/inspections/{id}`: present fields replace, absent ones stay.
/// In `aws`, `null` clears an optional value.
pub type InspectionPatch = NewInspection;

/// An inspection as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InspectionView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub source: SourceSettings,
    pub log_groups: Vec<String>,
    pub aws: AwsView,
    pub lookback_minutes: u32,
    pub delivery_delay_minutes: u32,
    pub baseline_days: u32,
    pub max_catch_up_minutes: u32,
    pub strategy: Strategy,
    pub ignore: IgnoreSettings,
    pub alert_policy: AlertPolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The newest run, if any.
    pub last_run: Option<RunSummary>,
    /// Credential of the Func-style trigger URLs `/api/v1/al/{trigger_id}` and
    /// `/api/v1/bat/{trigger_id}`, shown once: in the answer that creates the inspection and
    /// in the answer of `POST …/trigger-id/rotate`. Only its hash is stored, so no later read
    /// shows it; rotate it to get a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    pub timeout_seconds: u32,
    pub schedule: String,
    pub schedule_timezone: String,
    /// When the built-in scheduler starts the next run (the schedule's next time plus this
    /// inspection's spread offset); null when disabled or the scheduler is off.
    pub next_run_at: Option<DateTime<Utc>>,
    pub severity_rules: SeverityRules,
    /// Its registration as a self-built inspection in Guance.
    pub guance: GuanceSync,
}

/// AWS access as the API shows it: secrets only as "set" flags.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AwsView {
    pub region: String,
    pub account_id: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub access_key_id: Option<String>,
    pub endpoint_url: Option<String>,
    pub secret_access_key_set: bool,
    pub session_token_set: bool,
    /// Why the stored secrets cannot be opened (the encryption key that sealed them is not
    /// configured): they are kept as stored, and runs fail, until the key is restored or both
    /// secrets are given again. Absent when they open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_error: Option<String>,
}

impl From<&Inspection> for InspectionView {
    fn from(i: &Inspection) -> Self {
        let s = &i.settings;
        InspectionView {
            id: i.id,
            name: i.name.clone(),
            description: i.description.clone(),
            enabled: i.enabled,
            source: s.source.clone(),
            log_groups: s.log_groups.clone(),
            aws: AwsView {
                region: s.aws.region.clone(),
                account_id: s.aws.account_id.clone(),
                role_arn: s.aws.role_arn.clone(),
                external_id: s.aws.external_id.clone(),
                access_key_id: s.aws.access_key_id.clone(),
                endpoint_url: s.aws.endpoint_url.clone(),
                secret_access_key_set: i.secrets.secret_access_key.is_some(),
                session_token_set: i.secrets.session_token.is_some(),
                credentials_error: i.secrets_error.clone(),
            },
            lookback_minutes: s.lookback_minutes,
            delivery_delay_minutes: s.delivery_delay_minutes,
            baseline_days: s.baseline_days,
            max_catch_up_minutes: s.max_catch_up_minutes,
            strategy: s.strategy,
            ignore: s.ignore.clone(),
            alert_policy: s.alert_policy.clone(),
            created_at: i.created_at,
            updated_at: i.updated_at,
            last_run: i.last_run.clone(),
            trigger_id: i.trigger_id.as_ref().map(|t| t.expose().to_string()),
            timeout_seconds: s.timeout_seconds,
            schedule: s.schedule.clone(),
            schedule_timezone: s.schedule_timezone.clone(),
            next_run_at: None,
            severity_rules: s.severity_rules.clone(),
            guance: i.guance.clone(),
        }
    }
}

/// The validated form of an inspection's editable fields.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectionDraft {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub settings: InspectionSettings,
    pub secrets: AwsSecrets,
    /// The stored credentials could not be opened (their key is not configured): they are
    /// written back as they are stored, never as the empty `secrets` above, unless the
    /// change replaces them whole. Putting the key back then opens them again.
    pub keep_sealed_secrets: bool,
}

impl InspectionDraft {
    /// Validates a creation request, reporting every bad field at once.
    pub fn from_new(input: NewInspection) -> Result<Self, FieldErrors> {
        let base = InspectionDraft {
            name: String::new(),
            description: String::new(),
            enabled: true,
            settings: InspectionSettings {
                source: SourceSettings::default(),
                log_groups: Vec::new(),
                aws: AwsSettings::default(),
                lookback_minutes: DEFAULT_LOOKBACK_MINUTES,
                delivery_delay_minutes: DEFAULT_DELIVERY_DELAY_MINUTES,
                baseline_days: DEFAULT_BASELINE_DAYS,
                max_catch_up_minutes: DEFAULT_MAX_CATCH_UP_MINUTES,
                strategy: Strategy::default(),
                ignore: IgnoreSettings::default(),
                alert_policy: AlertPolicy::default(),
                timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
                schedule: default_schedule(),
                schedule_timezone: default_schedule_timezone(),
                severity_rules: SeverityRules::default(),
            },
            secrets: AwsSecrets::default(),
            keep_sealed_secrets: false,
        };
        let mut errors = FieldErrors::default();
        if input.name.is_none() {
            errors.add("name", "is required");
        }
        // Files need neither log groups nor AWS access; S3 needs AWS access (the bucket's
        // region) but names its own places.
        if !matches!(input.source, Some(SourceSettings::Files { .. })) {
            let names_groups = input.source.as_ref().is_some_and(SourceSettings::names_its_groups);
            if !names_groups && input.log_groups.is_none() && input.configs.is_none() {
                errors.add("log_groups", "is required (or give `configs`)");
            }
            match &input.aws {
                None => errors.add("aws", "is required"),
                Some(aws) if aws.region.is_none() => errors.add("aws.region", "is required"),
                Some(_) => {}
            }
        }
        base.apply(input, errors)
    }

    /// Applies a PATCH on top of the stored inspection and validates the result.
    pub fn patch(current: &Inspection, input: InspectionPatch) -> Result<Self, FieldErrors> {
        Self::of(current).apply(input, FieldErrors::default())
    }

    /// The stored inspection as a draft, to write back as it is (or patched).
    pub fn of(current: &Inspection) -> Self {
        InspectionDraft {
            name: current.name.clone(),
            description: current.description.clone(),
            enabled: current.enabled,
            settings: current.settings.clone(),
            secrets: current.secrets.clone(),
            keep_sealed_secrets: current.secrets_error.is_some(),
        }
    }

    fn apply(mut self, mut input: NewInspection, mut errors: FieldErrors) -> Result<Self, FieldErrors> {
        self.apply_identity(&mut input, &mut errors);
        self.apply_source(&mut input, &mut errors);
        if let Some(aws) = input.aws.take() {
            self.apply_aws(aws, &mut errors);
        }
        self.apply_reading(&mut input, &mut errors);
        self.apply_alerting(input, &mut errors);
        errors.into_result(self)
    }

    /// Name, description and the enabled switch.
    fn apply_identity(&mut self, input: &mut NewInspection, errors: &mut FieldErrors) {
        if let Some(name) = input.name.take() {
            // One spelling per name: `é` composed or as `e` + accent is the same name, and so
            // the same row under the unique constraint.
            let trimmed: String = name.trim().nfc().collect();
            let n = trimmed.chars().count();
            if n == 0 || n > 200 {
                errors.add("name", "must be 1–200 characters");
            } else if trimmed.chars().any(char::is_control) {
                errors.add("name", "must not contain control characters");
            } else if let Some(c) = trimmed.chars().find(|c| is_invisible(*c)) {
                errors.add(
                    "name",
                    format!("must not contain invisible or bidirectional control characters (U+{:04X})", c as u32),
                );
            }
            self.name = trimmed;
        }
        if let Some(d) = input.description.take() {
            if d.chars().count() > 2000 {
                errors.add("description", "must be at most 2000 characters");
            }
            self.description = d;
        }
        if let Some(e) = input.enabled {
            self.enabled = e;
        }
    }

    /// Where records come from: the source and its log groups (`log_groups` or `configs`).
    fn apply_source(&mut self, input: &mut NewInspection, errors: &mut FieldErrors) {
        if let Some(source) = input.source.take() {
            let mut source = source;
            if let SourceSettings::Files { path } = &source {
                if path.trim().is_empty() || path.len() > 4096 || path.chars().any(char::is_control) {
                    errors.add("source.path", "must be a path of 1–4096 printable characters");
                }
            }
            validate_s3(&mut source, errors);
            self.settings.source = source;
        }
        match (input.log_groups.take(), input.configs.take()) {
            (Some(_), Some(_)) => errors.add("configs", "give either `log_groups` or `configs`, not both"),
            (Some(groups), None) => {
                validate_log_groups("log_groups", &groups, errors);
                self.settings.log_groups = groups;
            }
            (None, Some(configs)) => {
                let groups = parse_configs(&configs);
                validate_log_groups("configs", &groups, errors);
                self.settings.log_groups = groups;
            }
            (None, None) => {}
        }
    }

    /// Which windows are read and how: spans, delays, the strategy and what is ignored.
    fn apply_reading(&mut self, input: &mut NewInspection, errors: &mut FieldErrors) {
        let s = &mut self.settings;
        set_range(&mut s.lookback_minutes, input.lookback_minutes, "lookback_minutes", 1, 1440, errors);
        set_range(
            &mut s.delivery_delay_minutes,
            input.delivery_delay_minutes,
            "delivery_delay_minutes",
            0,
            120,
            errors,
        );
        set_range(&mut s.baseline_days, input.baseline_days, "baseline_days", 0, 90, errors);
        set_range(&mut s.max_catch_up_minutes, input.max_catch_up_minutes, "max_catch_up_minutes", 60, 10080, errors);
        if let Some(st) = input.strategy {
            s.strategy = st;
        }
        if let Some(ignore) = input.ignore.take() {
            validate_ignore(&ignore, errors);
            s.ignore = ignore;
        }
    }

    /// How findings are raised and when runs start: alert policy, severity, Func timeout,
    /// schedule.
    fn apply_alerting(&mut self, input: NewInspection, errors: &mut FieldErrors) {
        let s = &mut self.settings;
        if let Some(policy) = input.alert_policy {
            policy.validate(errors);
            s.alert_policy = policy;
        }
        set_range(&mut s.timeout_seconds, input.timeout_seconds, "timeout_seconds", 1, 3600, errors);
        if let Some(schedule) = input.schedule {
            s.schedule = schedule.trim().to_string();
        }
        if let Some(tz) = input.schedule_timezone {
            s.schedule_timezone = tz.trim().to_string();
        }
        if let Some(rules) = input.severity_rules {
            rules.validate("severity_rules", errors);
            s.severity_rules = rules;
        }
        // Checked together: whether a schedule ever fires can depend on the zone.
        if let Err(e) = Schedule::parse(&s.schedule, &s.schedule_timezone) {
            errors.add(e.field(), e.to_string());
        }
    }

    fn apply_aws(&mut self, aws: AwsInput, errors: &mut FieldErrors) {
        let cur = &mut self.settings.aws;
        if let Some(region) = aws.region {
            if !valid_region(&region) {
                errors.add("aws.region", "must be an AWS region name such as `us-east-1`");
            }
            cur.region = region;
        }
        if let Some(v) = aws.account_id {
            if let Some(a) = &v {
                if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                    errors.add("aws.account_id", "must be 12 digits");
                }
            }
            cur.account_id = v;
        }
        if let Some(v) = aws.role_arn {
            if let Some(r) = &v {
                if !(r.starts_with("arn:aws") && r.contains(":iam::") && r.contains(":role/")) || r.len() > 2048 {
                    errors.add("aws.role_arn", "must be an IAM role ARN (`arn:aws:iam::<account>:role/<name>`)");
                }
            }
            cur.role_arn = v;
        }
        if let Some(v) = aws.external_id {
            if let Some(e) = &v {
                if e.len() < 2 || e.len() > 1224 || e.chars().any(char::is_control) {
                    errors.add("aws.external_id", "must be 2–1224 printable characters");
                }
            }
            cur.external_id = v;
        }
        if let Some(v) = aws.access_key_id {
            if let Some(k) = &v {
                if k.len() < 16 || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    errors.add("aws.access_key_id", "must be 16–128 letters and digits");
                }
            }
            cur.access_key_id = v;
        }
        if let Some(v) = aws.endpoint_url {
            if let Some(u) = &v {
                if let Err(e) = parse_endpoint_url(u) {
                    errors.add("aws.endpoint_url", e);
                }
            }
            cur.endpoint_url = v;
        }
        self.apply_secrets(aws.secret_access_key, aws.session_token, errors);
        let cur = &self.settings.aws;
        // Secrets stored unopened cannot be checked against the key id.
        if !self.keep_sealed_secrets {
            match (cur.access_key_id.is_some(), self.secrets.secret_access_key.is_some()) {
                (true, false) => errors.add("aws.secret_access_key", "is required with `access_key_id`"),
                (false, true) => errors.add("aws.access_key_id", "is required with `secret_access_key`"),
                _ => {}
            }
            if self.secrets.session_token.is_some() && cur.access_key_id.is_none() {
                errors.add("aws.session_token", "needs `access_key_id` and `secret_access_key`");
            }
        }
        if cur.external_id.is_some() && cur.role_arn.is_none() {
            errors.add("aws.external_id", "needs `role_arn`");
        }
    }

    /// The write-only part of the AWS access: each secret given replaces the stored one.
    fn apply_secrets(
        &mut self,
        secret_access_key: Option<Option<Secret>>,
        session_token: Option<Option<Secret>>,
        errors: &mut FieldErrors,
    ) {
        if self.keep_sealed_secrets {
            // What cannot be opened cannot be merged with: only a change that gives both
            // secrets (null for none) replaces the stored ones, so none is dropped unseen.
            match (&secret_access_key, &session_token) {
                (None, None) => {}
                (Some(_), Some(_)) => self.keep_sealed_secrets = false,
                (Some(_), None) | (None, Some(_)) => errors.add(
                    "aws",
                    "the stored credentials cannot be opened (their encryption key is not configured): give \
                     `secret_access_key` and `session_token` (null for none) together to replace them, or restore \
                     the key",
                ),
            }
        }
        if let Some(v) = secret_access_key {
            if let Some(s) = &v {
                if s.expose().is_empty() || s.expose().len() > 256 {
                    errors.add("aws.secret_access_key", "must be 1–256 characters");
                }
            }
            self.secrets.secret_access_key = v;
        }
        if let Some(v) = session_token {
            if let Some(s) = &v {
                if s.expose().is_empty() || s.expose().len() > 8192 {
                    errors.add("aws.session_token", "must be 1–8192 characters");
                }
            }
            self.secrets.session_token = v;
        }
    }
}

/// An inspection's `aws.endpoint_url` as a URL: `http(s)://host[:port][/path]`, nothing
/// the parser would quietly repair or drop. A URL parser strips tabs and newlines and
/// percent-encodes other oddities, so text a person would not read the same way (control,
/// invisible and bidirectional characters, spaces) is refused before parsing; credentials in
/// the URL, queries and fragments have no meaning for an endpoint.
pub fn parse_endpoint_url(raw: &str) -> Result<url::Url, String> {
    const EXPECTED: &str = "must be an http:// or https:// URL with a host (`https://logs.example.com:4566`)";
    if raw.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    if let Some(c) = raw.chars().find(|c| c.is_control() || c.is_whitespace() || is_invisible(*c)) {
        return Err(format!("must not contain control, invisible or space characters (U+{:04X})", c as u32));
    }
    // `http:host` and `http:/host` parse as `http://host/`: only the form a person reads as a
    // URL is taken.
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(EXPECTED.into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("{EXPECTED}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(EXPECTED.into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(url)
}

/// Whether an endpoint points at a link-local address or a cloud's instance metadata service.
/// Calls to it carry the inspection's signed request and session token, and a metadata
/// service answers with the machine's own credentials: from an API field, that is a way to
/// make the service fetch them. Names are compared as written; a name that resolves to such an
/// address is for network policy to stop.
pub fn is_metadata_endpoint(url: &url::Url) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let v4 = |ip: Ipv4Addr| {
        ip.is_link_local() || ip == Ipv4Addr::new(100, 100, 100, 200) || ip == Ipv4Addr::new(192, 0, 0, 192)
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) => v4(ip),
        Some(url::Host::Ipv6(ip)) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || ip.to_ipv4_mapped().is_some_and(v4)
        }
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            ["metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"]
                .contains(&name.as_str())
        }
        None => false,
    }
}

/// A new trigger id: 32 random bytes as 64 lowercase hex characters, safe in any URL. The
/// migration that introduced trigger ids makes ids of the same shape in SQL.
pub fn new_trigger_id() -> Secret {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}

/// What the store indexes a trigger id by: its SHA-256, so a lookup never compares the secret
/// itself byte by byte.
pub fn trigger_id_hash(trigger_id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(trigger_id.as_bytes()))
}

/// Splits the original inspection's `configs` text: one log group per line, blanks ignored.
pub fn parse_configs(configs: &str) -> Vec<String> {
    configs.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// CloudWatch Logs' own rule for log group names.
pub fn valid_log_group(name: &str) -> bool {
    (1..=512).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'#'))
}

pub fn validate_log_groups(field: &str, groups: &[String], errors: &mut FieldErrors) {
    if groups.is_empty() || groups.len() > MAX_LOG_GROUPS {
        errors.add(field, format!("must list 1–{MAX_LOG_GROUPS} log groups"));
        if groups.len() > MAX_LOG_GROUPS {
            return;
        }
    }
    let mut seen = BTreeSet::new();
    for (i, g) in groups.iter().enumerate() {
        if !valid_log_group(g) {
            errors.add(format!("{field}[{i}]"), "must be 1–512 characters of letters, digits and . - _ / #");
        } else if !seen.insert(g.as_str()) {
            errors.add(format!("{field}[{i}]"), "is listed twice");
        }
    }
}

fn valid_region(r: &str) -> bool {
    // e.g. us-east-1, cn-northwest-1, us-gov-west-1, ap-southeast-5
    let parts: Vec<&str> = r.split('-').collect();
    (2..=64).contains(&r.len())
        && parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn set_range(target: &mut u32, value: Option<u32>, field: &str, min: u32, max: u32, errors: &mut FieldErrors) {
    if let Some(v) = value {
        if v < min || v > max {
            errors.add(field, format!("must be between {min} and {max}"));
        }
        *target = v;
    }
}

fn validate_ignore(ignore: &IgnoreSettings, errors: &mut FieldErrors) {
    for (field, list) in [
        ("ignore.error_codes", &ignore.error_codes),
        ("ignore.event_sources", &ignore.event_sources),
        ("ignore.principal_arns", &ignore.principal_arns),
    ] {
        if list.len() > MAX_IGNORE_ENTRIES {
            errors.add(field, format!("must have at most {MAX_IGNORE_ENTRIES} entries"));
            continue;
        }
        for (i, v) in list.iter().enumerate() {
            if v.is_empty() || v.len() > 512 || v.chars().any(char::is_control) {
                errors.add(format!("{field}[{i}]"), "must be 1–512 printable characters");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_input(json: serde_json::Value) -> NewInspection {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn configs_text_is_split_into_log_groups() {
        assert_eq!(parse_configs("source1\nsource2\r\n\n  source3  \n"), vec!["source1", "source2", "source3"]);
    }

    #[test]
    fn minimal_inspection_gets_defaults() {
        let d = InspectionDraft::from_new(new_input(serde_json::json!({
            "name": "prod", "configs": "a\nb", "aws": {"region": "us-east-1"}
        })))
        .unwrap();
        assert_eq!(d.settings.log_groups, vec!["a", "b"]);
        assert_eq!(d.settings.lookback_minutes, 60);
        assert_eq!(d.settings.delivery_delay_minutes, 10);
        assert_eq!(d.settings.baseline_days, 7);
        assert_eq!(d.settings.strategy, Strategy::FilterLogEvents);
        assert!(d.enabled);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = InspectionDraft::from_new(new_input(serde_json::json!({
            "name": "",
            "log_groups": ["ok", "bad name", "ok"],
            "aws": {"region": "nowhere", "account_id": "12", "access_key_id": "AKIAAAAAAAAAAAAAAAAA"},
            "lookback_minutes": 0,
            "baseline_days": 91,
            "alert_policy": {"guance_alert_policy_uuids": ["x"], "notify_levels": []}
        })))
        .unwrap_err();
        let fields: Vec<&str> = err.fields().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            vec![
                "alert_policy.guance_alert_policy_uuids[0]",
                "alert_policy.notify_levels",
                "aws.account_id",
                "aws.region",
                "aws.secret_access_key",
                "baseline_days",
                "log_groups[1]",
                "log_groups[2]",
                "lookback_minutes",
                "name",
            ]
        );
    }

    #[test]
    fn log_group_names_follow_cloudwatch_rules() {
        for (name, ok) in [
            ("aws-cloudtrail-logs-123", true),
            ("/aws/cloudtrail/org#1.x_y", true),
            ("", false),
            ("has space", false),
            ("ünïcode", false),
            (&"a".repeat(512), true),
            (&"a".repeat(513), false),
        ] {
            assert_eq!(valid_log_group(name), ok, "{name}");
        }
    }

    #[test]
    fn endpoint_urls_are_parsed_not_prefix_matched() {
        for ok in [
            "http://127.0.0.1:4566",
            "https://logs.us-east-1.amazonaws.com",
            "http://localstack:4566/",
            "http://[::1]:9",
        ] {
            assert!(parse_endpoint_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://",
            "https://",
            "http://%00/",
            "http://a:65536/",
            "http://a:99999999/",
            "http://user:pw@a/",
            "http://user@a/",
            "http://a/\u{7}",
            "http://a\tb/",
            "http://a/\u{202E}gpj",
            "http://a\u{200B}b/",
            "ftp://a/",
            "http:a",
            "http://a/?x=1",
            "http://a/#f",
            "127.0.0.1:4566",
        ] {
            assert!(parse_endpoint_url(bad).is_err(), "{bad:?}");
        }
        for (raw, metadata) in [
            ("http://169.254.169.254/latest", true),
            ("http://169.254.0.1:80", true),
            ("http://2852039166/", true),
            ("http://[fd00:ec2::254]/", true),
            ("http://[fe80::1]/", true),
            ("http://[::ffff:169.254.169.254]/", true),
            ("http://metadata.google.internal./", true),
            ("http://METADATA.google.internal/", true),
            ("http://100.100.100.200/", true),
            ("http://127.0.0.1:4566", false),
            ("http://10.0.0.1/", false),
            ("https://logs.us-east-1.amazonaws.com", false),
        ] {
            assert_eq!(is_metadata_endpoint(&parse_endpoint_url(raw).unwrap()), metadata, "{raw}");
        }
    }

    #[test]
    fn regions() {
        for (r, ok) in [
            ("us-east-1", true),
            ("cn-northwest-1", true),
            ("us-gov-west-1", true),
            ("us-east", false),
            ("US-EAST-1", false),
            ("", false),
        ] {
            assert_eq!(valid_region(r), ok, "{r}");
        }
    }
}
