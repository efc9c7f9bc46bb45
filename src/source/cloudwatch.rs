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
//! per account and region below AWS's 5 calls/s quota. Throttling is not a fault of the
//! call: it slows the account's pace (see [`RateLimiter`]) and has its own, larger retry
//! budget, so a run is not failed by a quota it shares with other tools.
//!
//! Throughput. FilterLogEvents pages come one after another (each needs the previous page's
//! token), and one call's round trip can exceed the 200 ms the quota allows per call. So when
//! the pages read so far show that a window needs many more (and calls are slow enough for
//! one chain to fall behind, or there are very many), the rest of the window is cut into
//! [`FILTER_SLICES`] time slices paged at once, all under the same pace; at most one page
//! per slice is held at a time. Logs Insights: a window whose answer hits the row cap is cut
//! into as many parts as its matched records suggest, at once rather than by halves (each
//! level of cutting scans the window again, and Insights bills per byte scanned), and the
//! parts run concurrently, at most [`QUERY_CONCURRENCY`] queries per account.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsOutput;
use aws_sdk_cloudwatchlogs::types::{QueryStatus, ResultField};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::Rng;

use super::aws_error::{CallContext, classify, explain};
use super::limiter::QuerySlots;
use super::{LogSource, RateLimiter, ReadNotes, SourceCounters, SourceError, SourceErrorKind, SourceFactory, Window};
use crate::engine::cluster::scrub_nul;
use crate::engine::{AggregateRow, Clusterer, KeyActivity};
use crate::metrics::AwsOutcome;
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
/// Throttled attempts of one call before its log group is given up. Pacing makes throttles
/// rare; this many, with backoff, rides out minutes of someone else using the quota.
pub const MAX_THROTTLED_ATTEMPTS: u32 = 40;
/// Time slices of one window paged at once, when it needs many FilterLogEvents pages.
pub const FILTER_SLICES: usize = 4;
/// Cut a window into slices only when it looks like this many pages or more, and one call
/// takes longer than the pace allows (one chain of pages would fall behind the quota): each
/// slice ends with a part-filled page, which a short read would pay for and not get back.
const SLICE_MIN_PAGES: u64 = 8;
/// From this many pages on, slices are cut whatever calls take: the part-filled pages cost
/// at most 3%, and call times vary.
const SLICE_ALWAYS_PAGES: u64 = 100;
/// Logs Insights queries this process runs at once per account (AWS allows 30, and people
/// and dashboards use the same account).
pub const QUERY_CONCURRENCY: usize = 20;
/// At most this many parts when one capped window is cut; a part still capped is cut again.
const MAX_SPLIT: i64 = 100;
/// FilterLogEvents pages asked, at most, to tell whether a window holds any record.
const PROBE_PAGES: usize = 5;
/// Polls of a Logs Insights query at the plain poll interval before the gaps grow.
const STEADY_POLLS: u32 = 5;

/// How CloudWatch Logs is called: the pace, retries and timeouts of each call, and Logs
/// Insights polling. Tests shrink the timings; production uses the defaults.
#[derive(Debug, Clone)]
pub struct CloudWatchSettings {
    /// FilterLogEvents calls per second per account and region, shared by every run.
    pub filter_log_events_rps: f64,
    /// How often a Logs Insights query is polled.
    pub insights_poll_interval: Duration,
    /// Attempts per AWS call before the log group is given up for this run.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub retry_base: Duration,
    /// Per-attempt timeout of an AWS call.
    pub call_timeout: Duration,
    /// Logs Insights' cap on result rows; an answer this long may be cut and is split.
    pub insights_max_rows: usize,
    /// Whether an inspection's endpoint may be a link-local or cloud metadata address.
    pub allow_metadata_endpoints: bool,
}

impl CloudWatchSettings {
    /// AWS's hard quota for FilterLogEvents per account and region.
    pub const DEFAULT_FILTER_LOG_EVENTS_RPS: f64 = 5.0;
}

impl Default for CloudWatchSettings {
    fn default() -> Self {
        CloudWatchSettings {
            filter_log_events_rps: Self::DEFAULT_FILTER_LOG_EVENTS_RPS,
            insights_poll_interval: Duration::from_secs(1),
            max_attempts: 8,
            retry_base: Duration::from_millis(200),
            call_timeout: Duration::from_secs(60),
            insights_max_rows: 10_000,
            allow_metadata_endpoints: false,
        }
    }
}

/// Builds CloudWatch Logs clients for inspections; owns the process-wide call pacing.
pub struct CloudWatchFactory {
    settings: CloudWatchSettings,
    filter_limiter: Arc<RateLimiter>,
    query_slots: Arc<QuerySlots>,
}

impl CloudWatchFactory {
    pub fn new(settings: CloudWatchSettings) -> Self {
        let filter_limiter = Arc::new(RateLimiter::new(settings.filter_log_events_rps));
        CloudWatchFactory { settings, filter_limiter, query_slots: Arc::new(QuerySlots::new(QUERY_CONCURRENCY)) }
    }
}

impl CloudWatchFactory {
    pub fn settings(&self) -> &CloudWatchSettings {
        &self.settings
    }
}

/// The AWS configuration an inspection's calls are made with, whatever the service: its
/// region, its own keys or the default chain, its endpoint (checked again here: the
/// inspection may predate the check), and the role it assumes, if any.
pub(crate) async fn inspection_sdk_config(
    inspection: &Inspection,
    allow_metadata_endpoints: bool,
) -> anyhow::Result<aws_config::SdkConfig> {
    let aws = &inspection.settings.aws;
    let secrets = &inspection.secrets;
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(aws.region.clone()));
    match (&aws.access_key_id, &secrets.secret_access_key) {
        (Some(id), Some(secret)) => {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose().to_string(),
                secrets.session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "inspection",
            ));
        }
        // An inspection with a key of its own is never read with another identity (the
        // default credential chain is the service's own) because its secret is missing.
        (Some(_), None) => anyhow::bail!(
            "the inspection's access key has no secret access key stored; enter `aws.secret_access_key` again"
        ),
        (None, _) => {}
    }
    if let Some(url) = &aws.endpoint_url {
        let parsed = crate::model::inspection::parse_endpoint_url(url)
            .map_err(|e| anyhow::anyhow!("the inspection's endpoint_url {e}"))?;
        if crate::model::inspection::is_metadata_endpoint(&parsed) && !allow_metadata_endpoints {
            anyhow::bail!(
                "the inspection's endpoint_url points at a link-local or cloud metadata address, which this \
                 service does not call (ALLOW_METADATA_ENDPOINTS)"
            );
        }
        loader = loader.endpoint_url(url.clone());
    }
    let base = loader.load().await;
    let Some(role) = &aws.role_arn else { return Ok(base) };
    let mut assume = aws_config::sts::AssumeRoleProvider::builder(role.clone())
        .session_name("cloudtrail-inspector")
        .configure(&base);
    if let Some(ext) = &aws.external_id {
        assume = assume.external_id(ext.clone());
    }
    let provider = aws_credential_types::provider::SharedCredentialsProvider::new(assume.build().await);
    Ok(base.into_builder().credentials_provider(provider).build())
}

#[async_trait]
impl SourceFactory for CloudWatchFactory {
    async fn for_inspection(&self, inspection: &Inspection) -> anyhow::Result<Arc<dyn LogSource>> {
        let aws = &inspection.settings.aws;
        let config = inspection_sdk_config(inspection, self.settings.allow_metadata_endpoints).await?;
        let builder = aws_sdk_cloudwatchlogs::config::Builder::from(&config)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(self.settings.call_timeout)
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
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
        let place = Place {
            region: aws.region.clone(),
            endpoint: aws.endpoint_url.clone().unwrap_or_else(|| format!("https://logs.{}.amazonaws.com", aws.region)),
            custom_endpoint: aws.endpoint_url.is_some(),
            role_arn: aws.role_arn.clone(),
        };
        Ok(Arc::new(CloudWatchSource {
            client: Client::from_conf(builder.build()),
            place,
            strategy: inspection.settings.strategy,
            settings: self.settings.clone(),
            filter_limiter: self.filter_limiter.clone(),
            query_slots: self.query_slots.clone(),
            quota_key,
            counters: SourceCounters::default(),
            filter_call_micros: AtomicU64::new(0),
        }))
    }
}

/// Where an inspection's calls go, as messages about them name it.
struct Place {
    region: String,
    /// `aws.endpoint_url`, or CloudWatch Logs' own endpoint of the region.
    endpoint: String,
    custom_endpoint: bool,
    role_arn: Option<String>,
}

pub struct CloudWatchSource {
    client: Client,
    place: Place,
    strategy: Strategy,
    settings: CloudWatchSettings,
    filter_limiter: Arc<RateLimiter>,
    query_slots: Arc<QuerySlots>,
    quota_key: String,
    counters: SourceCounters,
    /// How long FilterLogEvents calls take to answer, in microseconds: a moving average
    /// (each call weighs a quarter).
    filter_call_micros: AtomicU64,
}

impl CloudWatchSource {
    /// Runs one AWS call on `groups` with bounded retries. `paced` calls wait for the quota
    /// first. Throttles are counted apart from other failures: they slow the pace and have a
    /// budget of their own ([`MAX_THROTTLED_ATTEMPTS`]). A failure is told as one sentence
    /// saying what to fix.
    async fn call<T, E, R, F, Fut>(
        &self,
        what: &'static str,
        groups: &[String],
        paced: bool,
        mut f: F,
    ) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + 'static,
    {
        let mut attempt = 0u32;
        let mut throttles = 0u32;
        loop {
            if paced {
                self.filter_limiter.acquire(&self.quota_key).await;
            }
            self.counters.api_calls.fetch_add(1, Ordering::Relaxed);
            let sent = tokio::time::Instant::now();
            let answer = f().await;
            if paced {
                let took = sent.elapsed().as_micros() as u64;
                let _ = self.filter_call_micros.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
                    Some(if avg == 0 { took } else { (avg * 3 + took) / 4 })
                });
            }
            let err = match answer {
                Ok(v) => {
                    if paced {
                        self.filter_limiter.succeeded(&self.quota_key);
                    }
                    self.counters.call_ended(what, AwsOutcome::Ok);
                    return Ok(v);
                }
                Err(e) => classify(e),
            };
            self.counters.call_ended(what, if err.throttled { AwsOutcome::Throttled } else { AwsOutcome::Error });
            let tries = if err.throttled {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                if paced {
                    self.filter_limiter.throttled(&self.quota_key);
                }
                throttles += 1;
                throttles
            } else {
                attempt += 1;
                attempt
            };
            let spent =
                if err.throttled { throttles >= MAX_THROTTLED_ATTEMPTS } else { attempt >= self.settings.max_attempts };
            if !err.retryable || spent {
                let attempts = err.retryable.then_some(attempt + throttles);
                return Err(SourceError::new(err.kind, explain(&err.failure, &self.context(what, groups, attempts))));
            }
            let delay = backoff(self.settings.retry_base, tries);
            tracing::debug!(
                what, attempt, throttles, delay_ms = delay.as_millis() as u64,
                error = %explain(&err.failure, &self.context(what, groups, None)), "retrying AWS call"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn context<'a>(&'a self, operation: &'a str, groups: &'a [String], attempts: Option<u32>) -> CallContext<'a> {
        CallContext {
            operation,
            groups,
            region: &self.place.region,
            endpoint: &self.place.endpoint,
            custom_endpoint: self.place.custom_endpoint,
            role_arn: self.place.role_arn.as_deref(),
            attempts,
        }
    }

    /// One FilterLogEvents page of `[start, end]` (inclusive milliseconds).
    async fn filter_page(
        &self,
        group: &str,
        start: i64,
        end: i64,
        token: Option<String>,
    ) -> Result<FilterLogEventsOutput, SourceError> {
        self.call("FilterLogEvents", std::slice::from_ref(&group.to_string()), true, || {
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
        .await
    }

    /// Whether `group` holds any record within `window`: FilterLogEvents without a pattern
    /// and a limit of one, so it costs a call (or a few, when AWS answers a page that searched
    /// only part of the group). `None` when it cannot be told.
    async fn holds_any_record(&self, group: &str, window: Window) -> Option<bool> {
        let (start, end) = (window.start.timestamp_millis(), window.end.timestamp_millis() - 1);
        let mut token: Option<String> = None;
        let mut guard = TokenGuard::default();
        for _ in 0..PROBE_PAGES {
            let page = self
                .call("FilterLogEvents", std::slice::from_ref(&group.to_string()), true, || {
                    self.client
                        .filter_log_events()
                        .log_group_name(group)
                        .start_time(start)
                        .end_time(end)
                        .limit(1)
                        .set_next_token(token.clone())
                        .send()
                })
                .await
                .map_err(
                    |e| tracing::debug!(log_group = group, error = %e, "could not tell whether the window is empty"),
                )
                .ok()?;
            if !page.events().is_empty() {
                return Some(true);
            }
            let Some(next) = page.next_token() else { return Some(false) };
            token = Some(guard.advance(next, true).ok()?);
        }
        None
    }

    /// [`Self::filter_page`] for slice `i`, so pages of all slices can be awaited together.
    async fn slice_page(
        &self,
        group: &str,
        i: usize,
        slice: (i64, i64),
        token: Option<String>,
    ) -> (usize, Result<FilterLogEventsOutput, SourceError>) {
        (i, self.filter_page(group, slice.0, slice.1, token).await)
    }

    /// Feeds a page's events within `[start, end]` into the clusterer, minus those in `skip`
    /// (already read before a slice boundary); returns the newest timestamp seen.
    fn ingest_page(
        &self,
        page: &FilterLogEventsOutput,
        (start, end): (i64, i64),
        skip: &HashSet<String>,
        clusterer: &mut Clusterer,
    ) -> Option<i64> {
        let mut newest = None;
        for event in page.events() {
            let Some(message) = event.message() else { continue };
            self.counters.bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
            if let Some(ts) = event.timestamp() {
                if ts < start || ts > end {
                    continue;
                }
                newest = newest.max(Some(ts));
            }
            if !skip.is_empty() && event.event_id().is_some_and(|id| skip.contains(id)) {
                continue;
            }
            clusterer.ingest(message.as_bytes());
        }
        newest
    }

    /// Reads a window's error records with FilterLogEvents. Pages come in time order; when
    /// the pages read so far cover little of the window, the rest is cut into time slices
    /// paged concurrently (see the module docs). Events at the cut that were already read are
    /// recognised by event id and not read twice.
    async fn filter_errors(&self, group: &str, window: Window, clusterer: &mut Clusterer) -> Result<(), SourceError> {
        let start = window.start.timestamp_millis();
        // FilterLogEvents' endTime is inclusive; windows are half-open.
        let end = window.end.timestamp_millis() - 1;
        let mut token: Option<String> = None;
        let mut guard = TokenGuard::default();
        let mut pages = 0u64;
        let mut newest: Option<i64> = None;
        // Event ids read at the newest timestamp, in case the window is cut there.
        let mut at_newest: HashSet<String> = HashSet::new();
        loop {
            let page = self.filter_page(group, start, end, token.clone()).await?;
            pages += 1;
            let none = HashSet::new();
            if let Some(t) = self.ingest_page(&page, (start, end), &none, clusterer) {
                if newest != Some(t) {
                    at_newest.clear();
                }
                newest = Some(t);
                at_newest.extend(
                    page.events()
                        .iter()
                        .filter(|e| e.timestamp() == Some(t))
                        .filter_map(|e| e.event_id().map(str::to_string)),
                );
            }
            let Some(next) = page.next_token() else { return Ok(()) };
            token = Some(guard.advance(next, page.events().is_empty())?);
            if let Some(reached) = newest {
                let covered = (reached - start + 1).max(1) as u64;
                let remaining = (end - reached).max(0) as u64;
                let pages_left = remaining.saturating_mul(pages) / covered;
                let call = Duration::from_micros(self.filter_call_micros.load(Ordering::Relaxed));
                let behind = call > self.filter_limiter.gap(&self.quota_key) * 4 / 5;
                // Call times are judged over a few pages: one slow answer is no trend.
                let worth = pages_left >= SLICE_ALWAYS_PAGES || (pages >= 3 && pages_left >= SLICE_MIN_PAGES && behind);
                if worth && end - reached >= FILTER_SLICES as i64 {
                    return self.filter_slices(group, (reached, end), at_newest, clusterer).await;
                }
            }
        }
    }

    /// Pages `[from, end]` in [`FILTER_SLICES`] time slices at once; `skip` holds the ids of
    /// events at `from` that were read already.
    async fn filter_slices(
        &self,
        group: &str,
        (from, end): (i64, i64),
        skip: HashSet<String>,
        clusterer: &mut Clusterer,
    ) -> Result<(), SourceError> {
        let n = FILTER_SLICES as i64;
        let width = (end - from + 1) / n;
        let slices: Vec<(i64, i64)> = (0..n)
            .map(|i| {
                let lo = from + i * width;
                let hi = if i == n - 1 { end } else { from + (i + 1) * width - 1 };
                (lo, hi)
            })
            .collect();
        let none = HashSet::new();
        let mut guards: Vec<TokenGuard> = slices.iter().map(|_| TokenGuard::default()).collect();
        let mut inflight = FuturesUnordered::new();
        for (i, s) in slices.iter().enumerate() {
            inflight.push(self.slice_page(group, i, *s, None));
        }
        while let Some((i, page)) = inflight.next().await {
            let page = page?;
            let skip = if i == 0 { &skip } else { &none };
            self.ingest_page(&page, slices[i], skip, clusterer);
            let Some(next) = page.next_token() else { continue };
            let next = guards[i].advance(next, page.events().is_empty())?;
            inflight.push(self.slice_page(group, i, slices[i], Some(next)));
        }
        Ok(())
    }

    /// Runs an Insights query to completion and returns its rows and how many records
    /// matched. Holds one of the account's query slots from start to end.
    async fn query(&self, groups: &[String], window: Window, query: &str) -> Result<QueryAnswer, SourceError> {
        let _slot = self.query_slots.acquire(&self.quota_key).await;
        // Seconds, both ends inclusive. CloudTrail times have whole seconds, so
        // [start, end - 1 s] is exactly the half-open window.
        let start = window.start.timestamp();
        let end = (window.end.timestamp() - 1).max(start);
        let started = self
            .call("StartQuery", groups, false, || {
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
        // A query takes from a second to minutes: ask every poll interval for the first few
        // polls, so a short query (most of them: an account's hour) is not kept waiting, then
        // less and less often, so long ones do not cost many calls.
        let interval = self.settings.insights_poll_interval;
        let mut wait = interval;
        let mut polls = 0u32;
        loop {
            tokio::time::sleep(wait).await;
            polls += 1;
            if polls >= STEADY_POLLS {
                wait = (wait * 3 / 2).min(interval * 2);
            }
            let out = self
                .call("GetQueryResults", groups, false, || self.client.get_query_results().query_id(&query_id).send())
                .await?;
            match out.status() {
                Some(QueryStatus::Complete) => {
                    let matched = out.statistics().map_or(0.0, |s| s.records_matched());
                    return Ok(QueryAnswer { rows: out.results().to_vec(), matched });
                }
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
        }
    }

    /// [`Self::query`] tagged with its window, so queries of many windows can run together.
    async fn window_query(
        &self,
        groups: &[String],
        window: Window,
        query: &str,
    ) -> (Window, Result<QueryAnswer, SourceError>) {
        (window, self.query(groups, window, query).await)
    }

    /// Runs `query` over `window`, cutting windows whose answer hits the row cap and running
    /// the parts concurrently; `rows` gets every complete answer. Returns the one-second
    /// windows that still hit the cap, with their (cut) answers.
    async fn query_all(
        &self,
        groups: &[String],
        window: Window,
        query: &str,
        mut rows: impl FnMut(&[Vec<ResultField>]),
    ) -> Result<Vec<(Window, QueryAnswer)>, SourceError> {
        let cap = self.settings.insights_max_rows;
        let mut pending = vec![window];
        let mut dense = Vec::new();
        let mut inflight = FuturesUnordered::new();
        loop {
            while inflight.len() < QUERY_CONCURRENCY {
                let Some(w) = pending.pop() else { break };
                inflight.push(self.window_query(groups, w, query));
            }
            let Some((w, answer)) = inflight.next().await else { return Ok(dense) };
            let answer = answer?;
            if answer.rows.len() >= cap {
                match split_n(w, split_parts(answer.matched, cap)) {
                    Some(parts) => pending.extend(parts.into_iter().rev()),
                    None => dense.push((w, answer)),
                }
                continue;
            }
            rows(&answer.rows);
        }
    }

    /// Aggregated error rows; windows whose answer hits the row cap are cut and asked again.
    /// Rows without the fields the query computes are counted in the notes, not skipped
    /// silently: an answer made only of them would look like a window without errors.
    async fn insights_errors(
        &self,
        group: &str,
        window: Window,
        clusterer: &mut Clusterer,
    ) -> Result<ReadNotes, SourceError> {
        let groups = [group.to_string()];
        let mut unusable = UnusableRows::default();
        let dense = self
            .query_all(&groups, window, ERROR_QUERY, |rows| {
                for row in rows {
                    match aggregate_row(row) {
                        Ok(agg) => clusterer.ingest_aggregate(&agg),
                        Err(fields) => unusable.add(fields),
                    }
                    unusable.of += 1;
                }
            })
            .await?;
        // One second with ≥ 10,000 distinct error rows: read the raw records instead.
        for (w, _) in dense {
            self.filter_errors(group, w, clusterer).await?;
        }
        let mut notes = ReadNotes::default();
        if let Some(problem) = unusable.problem("their error records were not counted") {
            notes.unusable_rows = unusable.rows;
            notes.problems.push(problem);
        }
        Ok(notes)
    }
}

/// An Insights query's answer.
struct QueryAnswer {
    rows: Vec<Vec<ResultField>>,
    /// Records that passed the query's filter (AWS's `recordsMatched`).
    matched: f64,
}

/// How many parts a window whose answer hit the row cap is cut into. A row aggregates at
/// least one record, so parts holding about half a cap of matched records each come back
/// whole when records are spread evenly in time; fewer matched records than that (rows
/// were cut for another reason) still halve the window.
fn split_parts(matched: f64, cap: usize) -> i64 {
    let parts = (matched / (cap as f64 / 2.0)).ceil();
    if parts.is_finite() { (parts as i64).clamp(2, MAX_SPLIT) } else { 2 }
}

/// Cuts a window into `n` parts on whole seconds (fewer when it has fewer seconds), or None
/// when it is one second long.
fn split_n(w: Window, n: i64) -> Option<Vec<Window>> {
    let secs = (w.end - w.start).num_seconds();
    if secs < 2 {
        return None;
    }
    let n = n.clamp(2, secs);
    let at = |i: i64| w.start + chrono::Duration::seconds(secs * i / n);
    Some((0..n).map(|i| Window { start: at(i), end: if i == n - 1 { w.end } else { at(i + 1) } }).collect())
}

pub(super) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(10)).min(MAX_BACKOFF);
    // Full jitter between half and all of it, so parallel runs do not retry in step.
    let ms = exp.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
}

/// Watches one chain of FilterLogEvents pages for a nextToken that does not advance: AWS
/// never repeats one for long, a broken proxy might, and the chain would loop forever.
#[derive(Default)]
struct TokenGuard {
    last: Option<String>,
    repeats: u32,
}

impl TokenGuard {
    /// Takes a page's next token and returns it as the token to send next.
    fn advance(&mut self, next: &str, empty_page: bool) -> Result<String, SourceError> {
        if self.last.as_deref() == Some(next) && empty_page {
            self.repeats += 1;
            if self.repeats > 100 {
                return Err(SourceError::new(
                    SourceErrorKind::Other,
                    "FilterLogEvents kept returning the same nextToken",
                ));
            }
        } else {
            self.repeats = 0;
        }
        self.last = Some(next.to_string());
        Ok(next.to_string())
    }
}

fn field<'a>(row: &'a [ResultField], name: &str) -> &'a str {
    row.iter().find(|f| f.field() == Some(name)).and_then(|f| f.value()).unwrap_or("")
}

/// A text field of a row, owned, with NUL characters made storable (see [`scrub_nul`]).
fn text(row: &[ResultField], name: &str) -> String {
    let mut s = field(row, name).to_string();
    scrub_nul(&mut s);
    s
}

/// Insights prints timestamps as `2023-07-10 11:42:36.000` (UTC).
pub fn parse_insights_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
        .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc)))
}

/// Logs Insights rows that lacked fields the query computes (an emulator that does not
/// compute `stats`, a query answered by something else), and which fields.
#[derive(Debug, Default)]
struct UnusableRows {
    rows: u64,
    /// Rows of the answer, usable or not.
    of: u64,
    fields: Vec<&'static str>,
}

impl UnusableRows {
    fn add(&mut self, fields: Vec<&'static str>) {
        self.rows += 1;
        for f in fields {
            if !self.fields.contains(&f) {
                self.fields.push(f);
            }
        }
    }

    /// The warning for the log group, when any row was unusable.
    fn problem(&self, consequence: &str) -> Option<String> {
        (self.rows > 0).then(|| {
            format!(
                "{} of {} Logs Insights rows lacked the fields the query asked for ({}): {consequence}; check that \
                 the endpoint is CloudWatch Logs and answers Logs Insights queries in full",
                self.rows,
                self.of,
                self.fields.join(", ")
            )
        })
    }
}

/// Whether a row has the field at all (empty or not): Insights leaves out the fields a
/// query's answer does not have.
fn present(row: &[ResultField], name: &str) -> bool {
    row.iter().any(|f| f.field() == Some(name) && f.value().is_some())
}

/// The names of the fields a row lacks, given whether each was there and readable.
fn lacking(fields: &[(&'static str, bool)]) -> Vec<&'static str> {
    fields.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect()
}

/// One aggregated error row, or the fields it lacks. The error code is coalesced by the
/// query, and the count and times are computed by it: a row without them was not answered
/// by CloudWatch Logs as asked.
fn aggregate_row(row: &[ResultField]) -> Result<AggregateRow, Vec<&'static str>> {
    let count: Option<u64> = field(row, "ct_count").parse().ok();
    let first = parse_insights_time(field(row, "ct_first"));
    let last = parse_insights_time(field(row, "ct_last"));
    let has_code = present(row, "ct_error_code");
    let (Some(count), Some(first), Some(last), true) = (count, first, last, has_code) else {
        return Err(lacking(&[
            ("ct_count", count.is_some()),
            ("ct_first", first.is_some()),
            ("ct_last", last.is_some()),
            ("ct_error_code", has_code),
        ]));
    };
    let event_id = text(row, "ct_event_id");
    Ok(AggregateRow {
        account_id: text(row, "ct_account"),
        region: text(row, "ct_region"),
        event_source: text(row, "eventSource"),
        event_name: text(row, "eventName"),
        error_code: text(row, "ct_error_code"),
        error_message: text(row, "ct_error_message"),
        principal: text(row, "ct_principal"),
        source_ip: text(row, "ct_source_ip"),
        count,
        first_seen: first,
        last_seen: last,
        sample_event_id: (!event_id.is_empty()).then_some(event_id),
    })
}

/// One access key's activity (none for the records whose key is empty, as some AWS service
/// records have), or the fields the row lacks.
fn key_row(row: &[ResultField]) -> Result<Option<KeyActivity>, Vec<&'static str>> {
    let has_key = present(row, "userIdentity.accessKeyId");
    let last = parse_insights_time(field(row, "ct_last"));
    let (true, Some(last)) = (has_key, last) else {
        return Err(lacking(&[("userIdentity.accessKeyId", has_key), ("ct_last", last.is_some())]));
    };
    if field(row, "userIdentity.accessKeyId").is_empty() {
        return Ok(None);
    }
    let first = parse_insights_time(field(row, "ct_first")).unwrap_or(last);
    Ok(Some(KeyActivity {
        access_key_id: text(row, "userIdentity.accessKeyId"),
        first_seen: first,
        last_seen: last,
        principal_arn: text(row, "ct_principal"),
        account_id: text(row, "ct_account"),
        last_event_name: text(row, "ct_event_name"),
        last_source_ip: text(row, "ct_source_ip"),
        count: field(row, "ct_count").parse().unwrap_or(0),
    }))
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
            Strategy::FilterLogEvents => {
                self.filter_errors(group, window, clusterer).await?;
                Ok(ReadNotes::default())
            }
            Strategy::LogsInsights => self.insights_errors(group, window, clusterer).await,
        }
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
        let mut unusable = UnusableRows::default();
        let mut take = |rows: &[Vec<ResultField>]| {
            for row in rows {
                match key_row(row) {
                    Ok(Some(k)) => clusterer.observe_key(k),
                    Ok(None) => {}
                    Err(fields) => unusable.add(fields),
                }
                unusable.of += 1;
            }
        };
        let dense = self.query_all(groups, window, KEY_QUERY, &mut take).await?;
        for (_, answer) in dense {
            tracing::warn!("more than 10,000 access keys active in one second; keeping the first 10,000");
            take(&answer.rows);
        }
        // The keys of usable rows are kept; the run is told the rest were not.
        match unusable.problem("their access keys were not counted") {
            Some(problem) => Err(SourceError::new(SourceErrorKind::Other, problem)),
            None => Ok(()),
        }
    }

    async fn window_has_records(&self, group: &str, window: Window) -> Option<bool> {
        self.holds_any_record(group, window).await
    }

    fn counters(&self) -> &SourceCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_does_not_advance_ends_the_chain() {
        let mut guard = TokenGuard::default();
        assert_eq!(guard.advance("a", false).unwrap(), "a");
        // The same token with events is progress; without, it counts against the chain.
        assert!(guard.advance("a", false).is_ok());
        for _ in 0..100 {
            assert!(guard.advance("a", true).is_ok());
        }
        assert!(guard.advance("a", true).unwrap_err().to_string().contains("same nextToken"));
        let mut guard = TokenGuard::default();
        for _ in 0..100 {
            guard.advance("a", true).unwrap();
        }
        assert!(guard.advance("b", true).is_ok(), "a new token starts the count again");
        assert!(guard.advance("b", true).is_ok());
    }

    #[test]
    fn insights_rows_come_out_without_nul() {
        let row: Vec<ResultField> = [
            ("ct_count", "2"),
            ("ct_first", "2023-07-10 11:42:36.000"),
            ("ct_last", "2023-07-10 11:43:36.000"),
            ("ct_event_id", "id\0"),
            ("ct_account", "1\0"),
            ("eventName", "Get\0Object"),
            ("ct_error_code", "Nul\0Code"),
            ("ct_error_message", "a\0b"),
            ("ct_principal", "arn:aws:iam::1:user/\0evil"),
            ("userIdentity.accessKeyId", "AKIA\0NUL"),
        ]
        .into_iter()
        .map(|(f, v)| ResultField::builder().field(f).value(v).build())
        .collect();
        let agg = aggregate_row(&row).unwrap();
        let key = key_row(&row).unwrap().unwrap();
        let texts = [&agg.account_id, &agg.event_name, &agg.error_code, &agg.error_message, &agg.principal]
            .into_iter()
            .chain(agg.sample_event_id.as_ref())
            .chain([&key.access_key_id, &key.principal_arn, &key.account_id]);
        for t in texts {
            assert!(!t.contains('\0') && t.contains('\u{fffd}'), "{t:?}");
        }
    }

    #[test]
    fn rows_say_which_asked_fields_they_lack() {
        let row = |fields: &[(&str, &str)]| -> Vec<ResultField> {
            fields.iter().map(|(f, v)| ResultField::builder().field(*f).value(*v).build()).collect()
        };
        // An emulator that returns the grouping fields but computes no aggregates.
        let short = row(&[("eventName", "GetObject"), ("ct_error_code", "AccessDenied"), ("ct_count", "many")]);
        assert_eq!(aggregate_row(&short).unwrap_err(), ["ct_count", "ct_first", "ct_last"]);
        assert_eq!(key_row(&row(&[("ct_last", "2023-07-10 11:42:36.000")])).unwrap_err(), ["userIdentity.accessKeyId"]);
        // An empty key is a record's own, not a field the answer lacks.
        let empty_key = row(&[("userIdentity.accessKeyId", ""), ("ct_last", "2023-07-10 11:42:36.000")]);
        assert!(key_row(&empty_key).unwrap().is_none());
        let mut unusable = UnusableRows { of: 4, ..UnusableRows::default() };
        unusable.add(vec!["ct_count"]);
        unusable.add(vec!["ct_count", "ct_last"]);
        let problem = unusable.problem("their error records were not counted").unwrap();
        assert!(problem.starts_with("2 of 4 Logs Insights rows lacked the fields the query asked for (ct_count, ct_last): their error records were not counted; check"), "{problem}");
        assert_eq!(UnusableRows::default().problem("x"), None);
    }

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
        let parts = split_n(w, 2).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].end - parts[0].start).num_seconds(), 2);
        assert_eq!(parts[0].end, parts[1].start);
        assert_eq!(parts[1].end, w.end);
        assert!(split_n(Window { start, end: start + chrono::Duration::seconds(1) }, 2).is_none());
        // More parts than seconds: one second each.
        let parts = split_n(w, 50).unwrap();
        assert_eq!(parts.len(), 5);
        assert!(parts.iter().all(|p| (p.end - p.start).num_seconds() == 1));
        // An hour in 7: contiguous, whole seconds, covering the window exactly.
        let hour = Window { start, end: start + chrono::Duration::hours(1) };
        let parts = split_n(hour, 7).unwrap();
        assert_eq!(parts.len(), 7);
        assert_eq!(parts[0].start, hour.start);
        assert_eq!(parts[6].end, hour.end);
        for pair in parts.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            assert!(pair[0].start < pair[0].end);
        }
    }

    #[test]
    fn capped_windows_are_cut_by_their_matched_records() {
        // Half a cap of records per part, at least 2 parts, at most MAX_SPLIT.
        assert_eq!(split_parts(10_000.0, 10_000), 2);
        assert_eq!(split_parts(0.0, 10_000), 2);
        assert_eq!(split_parts(f64::NAN, 10_000), 2);
        assert_eq!(split_parts(120_000.0, 10_000), 24);
        assert_eq!(split_parts(1e9, 10_000), MAX_SPLIT);
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
