//! CloudWatch Logs as a source of CloudTrail records, through the AWS SDK.
//!
//! Two ways to read error records, chosen per inspection:
//! - `filter_log_events`: FilterLogEvents with a JSON filter pattern that lets (almost) only
//!   error records cross the wire, paged to the end. The pattern saves bytes; the clusterer
//!   re-applies the selection to every record, so a server that ignores it costs speed,
//!   never correctness.
//! - `logs_insights`: one Logs Insights `stats … by` query per log group, so AWS aggregates
//!   and only one row per (account, region, API, error, message, principal, IP) comes back.
//!   A result at the 10,000-row cap is split in two by time and asked again.
//!
//! Access-key activity needs every record, not only errors. Reading them all with
//! FilterLogEvents would cost a page per ~1 MB of CloudTrail; one Insights query that
//! returns a row per key costs a StartQuery and a few polls, so both strategies use it.
//!
//! Every call goes through our own retry loop (throttling, 5xx, timeouts; bounded, with
//! exponential backoff and jitter) so call counts are exact, and FilterLogEvents is paced
//! per account and region below AWS's 5 calls/s quota.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::{QueryStatus, ResultField};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rand::Rng;

use super::{LogSource, RateLimiter, ReadNotes, SourceCounters, SourceError, SourceErrorKind, SourceFactory, Window};
use crate::config::RunnerSettings;
use crate::engine::{AggregateRow, Clusterer, KeyActivity};
use crate::model::inspection::{Inspection, Strategy};

/// Error records, and failed console sign-ins (which carry no errorCode).
pub const ERROR_FILTER_PATTERN: &str = "{ ($.errorCode = \"*\") || (($.eventName = \"ConsoleLogin\") && \
     (($.responseElements.ConsoleLogin = \"Failure\") || ($.errorMessage = \"Failed authentication\"))) }";

/// The same selection in Logs Insights, aggregated by everything a cluster is made of.
pub const ERROR_QUERY: &str = "filter ispresent(errorCode) or (eventName = \"ConsoleLogin\" and \
(responseElements.ConsoleLogin = \"Failure\" or errorMessage = \"Failed authentication\"))
| fields coalesce(recipientAccountId, userIdentity.accountId, \"\") as ct_account, \
coalesce(awsRegion, \"\") as ct_region, coalesce(errorCode, \"ConsoleLoginFailure\") as ct_error_code, \
coalesce(errorMessage, \"\") as ct_error_message, \
coalesce(userIdentity.arn, userIdentity.invokedBy, userIdentity.type, \"\") as ct_principal, \
coalesce(sourceIPAddress, \"\") as ct_source_ip
| stats count(*) as ct_count, min(@timestamp) as ct_first, max(@timestamp) as ct_last, \
latest(eventID) as ct_event_id by ct_account, ct_region, eventSource, eventName, ct_error_code, \
ct_error_message, ct_principal, ct_source_ip
| limit 10000";

/// One row per access key with its newest activity.
pub const KEY_QUERY: &str = "filter ispresent(userIdentity.accessKeyId)
| stats max(@timestamp) as ct_last, min(@timestamp) as ct_first, latest(userIdentity.arn) as ct_principal, \
latest(recipientAccountId) as ct_account, latest(eventName) as ct_event_name, \
latest(sourceIPAddress) as ct_source_ip, count(*) as ct_count by userIdentity.accessKeyId
| limit 10000";

/// Longest we wait for one Insights query before giving the log group up.
const QUERY_DEADLINE: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Builds CloudWatch Logs clients for inspections; owns the process-wide call pacing.
pub struct CloudWatchFactory {
    settings: RunnerSettings,
    filter_limiter: Arc<RateLimiter>,
}

impl CloudWatchFactory {
    pub fn new(settings: RunnerSettings) -> Self {
        let filter_limiter = Arc::new(RateLimiter::new(settings.filter_log_events_rps));
        CloudWatchFactory { settings, filter_limiter }
    }
}

#[async_trait]
impl SourceFactory for CloudWatchFactory {
    async fn for_inspection(&self, inspection: &Inspection) -> anyhow::Result<Arc<dyn LogSource>> {
        let aws = &inspection.settings.aws;
        let secrets = &inspection.secrets;
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(aws.region.clone()));
        if let (Some(id), Some(secret)) = (&aws.access_key_id, &secrets.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose().to_string(),
                secrets.session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "inspection",
            ));
        }
        if let Some(url) = &aws.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        let base = loader.load().await;
        let mut builder =
            aws_sdk_cloudwatchlogs::config::Builder::from(&base).retry_config(RetryConfig::disabled()).timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(self.settings.aws_call_timeout)
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(role) = &aws.role_arn {
            let mut assume = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name("cloudtrail-inspector")
                .configure(&base);
            if let Some(ext) = &aws.external_id {
                assume = assume.external_id(ext.clone());
            }
            builder = builder.credentials_provider(assume.build().await);
        }
        // Quotas are per account and region; without an account id, the credentials stand in.
        let quota_key = format!(
            "{}|{}|{}",
            aws.region,
            aws.account_id
                .clone()
                .or_else(|| aws.role_arn.clone())
                .or_else(|| aws.access_key_id.clone())
                .unwrap_or_else(|| "default-credentials".into()),
            aws.endpoint_url.clone().unwrap_or_default()
        );
        Ok(Arc::new(CloudWatchSource {
            client: Client::from_conf(builder.build()),
            strategy: inspection.settings.strategy,
            settings: self.settings.clone(),
            filter_limiter: self.filter_limiter.clone(),
            quota_key,
            counters: SourceCounters::default(),
        }))
    }
}

pub struct CloudWatchSource {
    client: Client,
    strategy: Strategy,
    settings: RunnerSettings,
    filter_limiter: Arc<RateLimiter>,
    quota_key: String,
    counters: SourceCounters,
}

/// What went wrong with one call, as far as retrying is concerned.
struct CallError {
    retryable: bool,
    throttled: bool,
    error: SourceError,
}

fn classify<E, R>(err: SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("UnknownError").to_string();
            let message = se.err().message().unwrap_or("").to_string();
            let text = if message.is_empty() { code.clone() } else { format!("{code}: {message}") };
            let throttled = matches!(
                code.as_str(),
                "ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded"
            );
            let server =
                matches!(code.as_str(), "ServiceUnavailableException" | "InternalFailure" | "InternalServerError")
                    || code.contains("ServiceUnavailable");
            let kind = match code.as_str() {
                "ResourceNotFoundException" => SourceErrorKind::NotFound,
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "ExpiredTokenException"
                | "InvalidSignatureException"
                | "MissingAuthenticationTokenException"
                | "AccessDenied" => SourceErrorKind::Denied,
                _ if throttled || server => SourceErrorKind::Unavailable,
                _ => SourceErrorKind::Other,
            };
            CallError { retryable: throttled || server, throttled, error: SourceError::new(kind, text) }
        }
        SdkError::TimeoutError(_) => CallError {
            retryable: true,
            throttled: false,
            error: SourceError::new(SourceErrorKind::Unavailable, "the call to CloudWatch Logs timed out"),
        },
        SdkError::DispatchFailure(d) => {
            let retryable = d.is_io() || d.is_timeout();
            let kind = if retryable { SourceErrorKind::Unavailable } else { SourceErrorKind::Denied };
            CallError {
                retryable,
                throttled: false,
                error: SourceError::new(
                    kind,
                    format!("could not reach CloudWatch Logs: {}", DisplayErrorContext(&err)),
                ),
            }
        }
        SdkError::ResponseError(_) => CallError {
            retryable: true,
            throttled: false,
            error: SourceError::new(
                SourceErrorKind::Unavailable,
                format!("unreadable answer from CloudWatch Logs: {}", DisplayErrorContext(&err)),
            ),
        },
        _ => CallError {
            retryable: false,
            throttled: false,
            error: SourceError::new(SourceErrorKind::Other, DisplayErrorContext(&err).to_string()),
        },
    }
}

impl CloudWatchSource {
    /// Runs one AWS call with bounded retries. `paced` calls wait for the quota first.
    async fn call<T, E, R, F, Fut>(&self, what: &str, paced: bool, mut f: F) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let mut attempt = 0u32;
        loop {
            if paced {
                self.filter_limiter.acquire(&self.quota_key).await;
            }
            self.counters.api_calls.fetch_add(1, Ordering::Relaxed);
            let err = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => classify(e),
            };
            if err.throttled {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            if !err.retryable || attempt >= self.settings.aws_max_attempts {
                let suffix = if err.retryable { format!(" (gave up after {attempt} attempts)") } else { String::new() };
                return Err(SourceError::new(err.error.kind, format!("{what}: {}{suffix}", err.error.message)));
            }
            let delay = backoff(self.settings.aws_retry_base, attempt);
            tracing::debug!(what, attempt, delay_ms = delay.as_millis() as u64, error = %err.error, "retrying AWS call");
            tokio::time::sleep(delay).await;
        }
    }

    async fn filter_errors(&self, group: &str, window: Window, clusterer: &mut Clusterer) -> Result<(), SourceError> {
        let start = window.start.timestamp_millis();
        // FilterLogEvents' endTime is inclusive; windows are half-open.
        let end = window.end.timestamp_millis() - 1;
        let mut token: Option<String> = None;
        let mut repeats = 0;
        loop {
            let page = self
                .call("FilterLogEvents", true, || {
                    self.client
                        .filter_log_events()
                        .log_group_name(group)
                        .start_time(start)
                        .end_time(end)
                        .filter_pattern(ERROR_FILTER_PATTERN)
                        .limit(10_000)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            for event in page.events() {
                let Some(message) = event.message() else { continue };
                self.counters.bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
                if let Some(ts) = event.timestamp() {
                    if ts < start || ts > end {
                        continue;
                    }
                }
                clusterer.ingest(message.as_bytes());
            }
            match page.next_token() {
                None => return Ok(()),
                Some(next) => {
                    // A token that does not advance would loop forever; AWS never does this
                    // for long, a broken proxy might.
                    if token.as_deref() == Some(next) && page.events().is_empty() {
                        repeats += 1;
                        if repeats > 100 {
                            return Err(SourceError::new(
                                SourceErrorKind::Other,
                                "FilterLogEvents kept returning the same nextToken",
                            ));
                        }
                    } else {
                        repeats = 0;
                    }
                    token = Some(next.to_string());
                }
            }
        }
    }

    /// Runs an Insights query to completion and returns its rows.
    async fn query(
        &self,
        groups: &[String],
        window: Window,
        query: &str,
    ) -> Result<Vec<Vec<ResultField>>, SourceError> {
        // Seconds, both ends inclusive. CloudTrail times have whole seconds, so
        // [start, end - 1 s] is exactly the half-open window.
        let start = window.start.timestamp();
        let end = (window.end.timestamp() - 1).max(start);
        let started = self
            .call("StartQuery", false, || {
                self.client
                    .start_query()
                    .set_log_group_names(Some(groups.to_vec()))
                    .start_time(start)
                    .end_time(end)
                    .query_string(query)
                    .limit(self.settings.insights_max_rows as i32)
                    .send()
            })
            .await?;
        let Some(query_id) = started.query_id().map(str::to_string) else {
            return Err(SourceError::new(SourceErrorKind::Other, "StartQuery returned no query id"));
        };
        let deadline = tokio::time::Instant::now() + QUERY_DEADLINE;
        loop {
            let out = self
                .call("GetQueryResults", false, || self.client.get_query_results().query_id(&query_id).send())
                .await?;
            match out.status() {
                Some(QueryStatus::Complete) => return Ok(out.results().to_vec()),
                Some(QueryStatus::Failed | QueryStatus::Cancelled | QueryStatus::Timeout) => {
                    return Err(SourceError::new(
                        SourceErrorKind::Other,
                        format!("Logs Insights query ended as {}", out.status().map(|s| s.as_str()).unwrap_or("?")),
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.client.stop_query().query_id(&query_id).send().await;
                return Err(SourceError::new(
                    SourceErrorKind::Unavailable,
                    "Logs Insights query did not finish in time",
                ));
            }
            tokio::time::sleep(self.settings.insights_poll_interval).await;
        }
    }

    /// Aggregated error rows; windows whose answer hits the row cap are halved and asked again.
    async fn insights_errors(&self, group: &str, window: Window, clusterer: &mut Clusterer) -> Result<(), SourceError> {
        let groups = [group.to_string()];
        let mut pending = vec![window];
        while let Some(w) = pending.pop() {
            let rows = self.query(&groups, w, ERROR_QUERY).await?;
            if rows.len() >= self.settings.insights_max_rows {
                if let Some((a, b)) = split(w) {
                    pending.push(b);
                    pending.push(a);
                    continue;
                }
                // One second with ≥ 10,000 distinct error rows: read the raw records instead.
                self.filter_errors(group, w, clusterer).await?;
                continue;
            }
            for row in &rows {
                if let Some(agg) = aggregate_row(row) {
                    clusterer.ingest_aggregate(&agg);
                }
            }
        }
        Ok(())
    }
}

/// Halves a window on a whole second, or None when it is one second long.
fn split(w: Window) -> Option<(Window, Window)> {
    let secs = (w.end - w.start).num_seconds();
    if secs < 2 {
        return None;
    }
    let mid = w.start + chrono::Duration::seconds(secs / 2);
    Some((Window { start: w.start, end: mid }, Window { start: mid, end: w.end }))
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(10)).min(MAX_BACKOFF);
    // Full jitter between half and all of it, so parallel runs do not retry in step.
    let ms = exp.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
}

fn field<'a>(row: &'a [ResultField], name: &str) -> &'a str {
    row.iter().find(|f| f.field() == Some(name)).and_then(|f| f.value()).unwrap_or("")
}

/// Insights prints timestamps as `2023-07-10 11:42:36.000` (UTC).
pub fn parse_insights_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
        .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc)))
}

fn aggregate_row(row: &[ResultField]) -> Option<AggregateRow> {
    let count: u64 = field(row, "ct_count").parse().ok()?;
    let first = parse_insights_time(field(row, "ct_first"))?;
    let last = parse_insights_time(field(row, "ct_last"))?;
    let event_id = field(row, "ct_event_id");
    Some(AggregateRow {
        account_id: field(row, "ct_account").to_string(),
        region: field(row, "ct_region").to_string(),
        event_source: field(row, "eventSource").to_string(),
        event_name: field(row, "eventName").to_string(),
        error_code: field(row, "ct_error_code").to_string(),
        error_message: field(row, "ct_error_message").to_string(),
        principal: field(row, "ct_principal").to_string(),
        source_ip: field(row, "ct_source_ip").to_string(),
        count,
        first_seen: first,
        last_seen: last,
        sample_event_id: (!event_id.is_empty()).then(|| event_id.to_string()),
    })
}

fn key_row(row: &[ResultField]) -> Option<KeyActivity> {
    let key = field(row, "userIdentity.accessKeyId");
    if key.is_empty() {
        return None;
    }
    let last = parse_insights_time(field(row, "ct_last"))?;
    let first = parse_insights_time(field(row, "ct_first")).unwrap_or(last);
    Some(KeyActivity {
        access_key_id: key.to_string(),
        first_seen: first,
        last_seen: last,
        principal_arn: field(row, "ct_principal").to_string(),
        account_id: field(row, "ct_account").to_string(),
        last_event_name: field(row, "ct_event_name").to_string(),
        last_source_ip: field(row, "ct_source_ip").to_string(),
        count: field(row, "ct_count").parse().unwrap_or(0),
    })
}

#[async_trait]
impl LogSource for CloudWatchSource {
    async fn read_errors(
        &self,
        group: &str,
        window: Window,
        clusterer: &mut Clusterer,
    ) -> Result<ReadNotes, SourceError> {
        if window.is_empty() {
            return Ok(ReadNotes::default());
        }
        match self.strategy {
            Strategy::FilterLogEvents => self.filter_errors(group, window, clusterer).await?,
            Strategy::LogsInsights => self.insights_errors(group, window, clusterer).await?,
        }
        Ok(ReadNotes::default())
    }

    async fn read_key_activity(
        &self,
        groups: &[String],
        window: Window,
        clusterer: &mut Clusterer,
    ) -> Result<(), SourceError> {
        if window.is_empty() || groups.is_empty() {
            return Ok(());
        }
        let mut pending = vec![window];
        while let Some(w) = pending.pop() {
            let rows = self.query(groups, w, KEY_QUERY).await?;
            if rows.len() >= self.settings.insights_max_rows {
                if let Some((a, b)) = split(w) {
                    pending.push(b);
                    pending.push(a);
                    continue;
                }
                tracing::warn!("more than 10,000 access keys active in one second; keeping the first 10,000");
            }
            for row in &rows {
                if let Some(k) = key_row(row) {
                    clusterer.observe_key(k);
                }
            }
        }
        Ok(())
    }

    fn counters(&self) -> &SourceCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insights_times_parse() {
        let t = parse_insights_time("2023-07-10 11:42:36.000").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-07-10T11:42:36+00:00");
        assert!(parse_insights_time("yesterday").is_none());
    }

    #[test]
    fn windows_split_on_seconds() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let w = Window { start, end: start + chrono::Duration::seconds(5) };
        let (a, b) = split(w).unwrap();
        assert_eq!((a.end - a.start).num_seconds(), 2);
        assert_eq!(a.end, b.start);
        assert_eq!(b.end, w.end);
        assert!(split(Window { start, end: start + chrono::Duration::seconds(1) }).is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        for attempt in 1..20 {
            let d = backoff(base, attempt);
            assert!(d <= MAX_BACKOFF);
            assert!(d >= base.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF) / 2);
        }
    }
}
