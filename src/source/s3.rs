//! CloudTrail's files in S3 as a source: the bucket a trail (an organization's trail, often)
//! delivers to, read where CloudTrail writes,
//! `<prefix>/AWSLogs/[o-<org>/]<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz`.
//!
//! Accounts and regions are the inspection's, or found by listing with a delimiter (a call
//! per level). Of each region only the day prefixes that can hold files delivered in the
//! window are listed, and a window selects files by their delivery time (`LastModified`), not
//! by their records' `eventTime`: consecutive windows split the bucket's files between them,
//! so a file delivered late is read by the run whose window holds its delivery, once. The
//! key's day only says where to look: a file is written under the day its key is stamped
//! with, at most [`KEY_LAG`] before its delivery.
//!
//! Objects are fetched [`S3Settings::objects_in_flight`] at a time and fed, in key order,
//! through the same reader as files on disk ([`super::files::read_bytes`] and
//! [`super::files::ingest_file`]): memory holds at most that many objects, compressed and
//! not. A file that cannot be read whole (gzip or JSON cut short, a download that kept
//! ending early, an object deleted since the listing) is named on the run and the others
//! are still read, as for files on disk. What stops every object alike (the bucket missing,
//! access denied, throttling that outlasts the retries) fails the read with one sentence
//! saying what to fix.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use futures::StreamExt;

use super::aws_error::{CallContext, CallError, Failure, classify, explain_s3};
use super::cloudwatch::{backoff, inspection_sdk_config};
use super::files::{MAX_LISTED_PROBLEMS, Progress, ingest_file, read_bytes};
use super::{LogSource, ReadNotes, SourceCounters, SourceError, SourceErrorKind, SourceFactory, Window};
use crate::engine::Clusterer;
use crate::metrics::AwsOutcome;
use crate::model::inspection::{Inspection, SourceSettings, s3_url};

/// How long after the time its key is stamped with a file may be delivered and still be
/// found: CloudTrail delivers within about 5 minutes; a day covers its rare late deliveries.
pub const KEY_LAG: TimeDelta = TimeDelta::days(1);
/// Windows longer than this find their days by listing (years, months, days) rather than
/// listing every day of the span.
const LIST_DAYS_UP_TO: i64 = 62;
/// Listing pages of one prefix at most: a million keys a day is far beyond any trail.
const MAX_LIST_PAGES: usize = 10_000;

/// How S3 is called. Tests shrink the timings; production uses the defaults.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Objects fetched and decompressed at once per read: the bound on memory.
    pub objects_in_flight: usize,
    /// Attempts per call (and per download cut short) before giving up.
    pub max_attempts: u32,
    /// Throttled attempts (503 SlowDown) of one call before the read is given up: S3
    /// slows a prefix's readers down for a while, which is no fault of the call.
    pub max_throttled_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub retry_base: Duration,
    /// Per-attempt timeout of a call.
    pub call_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            objects_in_flight: 16,
            max_attempts: 6,
            max_throttled_attempts: 30,
            retry_base: Duration::from_millis(200),
            call_timeout: Duration::from_secs(60),
        }
    }
}

/// Builds S3 clients for inspections.
pub struct S3Factory {
    settings: S3Settings,
    allow_metadata_endpoints: bool,
    progress: Option<Progress>,
}

impl S3Factory {
    pub fn new(settings: S3Settings, allow_metadata_endpoints: bool) -> Self {
        S3Factory { settings, allow_metadata_endpoints, progress: None }
    }

    /// Reports objects read and objects in all (the `scan` command's progress bar).
    pub fn with_progress(self, progress: Option<Progress>) -> Self {
        S3Factory { progress, ..self }
    }
}

#[async_trait]
impl SourceFactory for S3Factory {
    async fn for_inspection(&self, inspection: &Inspection) -> anyhow::Result<Arc<dyn LogSource>> {
        let SourceSettings::S3 { bucket, prefix, accounts, regions } = &inspection.settings.source else {
            anyhow::bail!("the inspection does not read S3");
        };
        let config = inspection_sdk_config(inspection, self.allow_metadata_endpoints).await?;
        let endpoint = config.endpoint_url().map(str::to_string);
        let mut builder =
            aws_sdk_s3::config::Builder::from(&config).retry_config(RetryConfig::disabled()).timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(self.settings.call_timeout)
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
        // Emulators and S3-compatible stores seldom answer bucket names as host names.
        if endpoint.is_some() {
            builder = builder.force_path_style(true);
        }
        let region = inspection.settings.aws.region.clone();
        Ok(Arc::new(S3Source {
            client: Client::from_conf(builder.build()),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            accounts: accounts.clone(),
            regions: regions.clone(),
            place: vec![s3_url(bucket, prefix)],
            custom_endpoint: endpoint.is_some(),
            endpoint: endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com")),
            region,
            role_arn: inspection.settings.aws.role_arn.clone(),
            settings: self.settings.clone(),
            progress: self.progress.clone(),
            counters: SourceCounters::default(),
            regions_found: tokio::sync::OnceCell::new(),
            last_listing: std::sync::Mutex::new(None),
        }))
    }
}

pub struct S3Source {
    client: Client,
    bucket: String,
    /// The trail's key prefix, without slashes at its ends.
    prefix: String,
    accounts: Option<Vec<String>>,
    regions: Option<Vec<String>>,
    /// `s3://bucket/prefix`, the one "group" messages name.
    place: Vec<String>,
    region: String,
    endpoint: String,
    custom_endpoint: bool,
    role_arn: Option<String>,
    settings: S3Settings,
    progress: Option<Progress>,
    counters: SourceCounters,
    /// The region prefixes to read, found once per run (its baseline and window share them).
    regions_found: tokio::sync::OnceCell<(Vec<String>, Vec<String>)>,
    /// Objects delivered in the last window read, to tell an idle trail from a quiet one.
    last_listing: std::sync::Mutex<Option<(Window, usize)>>,
}

/// One object to read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Listed {
    key: String,
    size: i64,
}

impl S3Source {
    fn context<'a>(&'a self, operation: &'a str, attempts: Option<u32>) -> CallContext<'a> {
        CallContext {
            operation,
            groups: &self.place,
            region: &self.region,
            endpoint: &self.endpoint,
            custom_endpoint: self.custom_endpoint,
            role_arn: self.role_arn.as_deref(),
            attempts,
        }
    }

    /// Runs one call with bounded retries: throttles (503 SlowDown) and other transient
    /// failures have budgets of their own. A failure is one sentence saying what to fix.
    async fn call<T, E, R, F, Fut>(&self, what: &'static str, f: F) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + 'static,
    {
        self.call_classified(what, f).await.map_err(|(err, attempts)| self.explain(what, &err, attempts))
    }

    fn explain(&self, what: &'static str, err: &CallError, attempts: Option<u32>) -> SourceError {
        SourceError::new(err.kind, explain_s3(&err.failure, &self.bucket, &self.context(what, attempts)))
    }

    /// [`Self::call`], with the failure as classified (and the attempts made when it was
    /// retried), for callers that treat one error code apart.
    async fn call_classified<T, E, R, F, Fut>(
        &self,
        what: &'static str,
        mut f: F,
    ) -> Result<T, (CallError, Option<u32>)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + 'static,
    {
        let (mut attempt, mut throttles) = (0u32, 0u32);
        loop {
            self.counters.api_calls.fetch_add(1, Ordering::Relaxed);
            let err = match f().await {
                Ok(v) => {
                    self.counters.call_ended(what, AwsOutcome::Ok);
                    return Ok(v);
                }
                Err(e) => classify(e),
            };
            self.counters.call_ended(what, if err.throttled { AwsOutcome::Throttled } else { AwsOutcome::Error });
            let tries = if err.throttled {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                throttles += 1;
                throttles
            } else {
                attempt += 1;
                attempt
            };
            let spent = if err.throttled {
                throttles >= self.settings.max_throttled_attempts
            } else {
                attempt >= self.settings.max_attempts
            };
            if !err.retryable || spent {
                let attempts = err.retryable.then_some(attempt + throttles);
                return Err((err, attempts));
            }
            let delay = backoff(self.settings.retry_base, tries);
            tracing::debug!(what, attempt, throttles, delay_ms = delay.as_millis() as u64, "retrying S3 call");
            tokio::time::sleep(delay).await;
        }
    }

    /// Every page of a listing of `prefix`: the objects, and with a delimiter the "folders"
    /// one level down.
    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
    ) -> Result<(Vec<aws_sdk_s3::types::Object>, Vec<String>), SourceError> {
        let (mut objects, mut folders) = (Vec::new(), Vec::new());
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = self
                .call("ListObjectsV2", || {
                    let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix);
                    if delimiter {
                        req = req.delimiter("/");
                    }
                    req.set_continuation_token(token.clone()).send()
                })
                .await?;
            objects.extend(page.contents().iter().cloned());
            folders.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => {
                    if token.as_deref() == Some(next) {
                        return Err(SourceError::new(
                            SourceErrorKind::Other,
                            format!(
                                "listing {prefix} in bucket {} did not advance (the same continuation token twice)",
                                self.bucket
                            ),
                        ));
                    }
                    token = Some(next.to_string());
                }
                _ => return Ok((objects, folders)),
            }
        }
        Err(SourceError::new(
            SourceErrorKind::Other,
            format!("listing {prefix} in bucket {} took more than {MAX_LIST_PAGES} pages", self.bucket),
        ))
    }

    async fn folders(&self, prefix: &str) -> Result<Vec<String>, SourceError> {
        Ok(self.list(prefix, true).await?.1)
    }

    /// `<prefix>/AWSLogs/`.
    fn logs_root(&self) -> String {
        if self.prefix.is_empty() { "AWSLogs/".to_string() } else { format!("{}/AWSLogs/", self.prefix) }
    }

    /// The region prefixes to read (`…/<account>/CloudTrail/<region>/`), and accounts the
    /// inspection names that the bucket does not hold.
    async fn find_regions(&self) -> Result<(Vec<String>, Vec<String>), SourceError> {
        let root = self.logs_root();
        let mut account_dirs: Vec<String> = Vec::new();
        for dir in self.folders(&root).await? {
            let name = last_segment(&dir);
            if name.starts_with("o-") {
                account_dirs.extend(self.folders(&dir).await?.into_iter().filter(|d| is_account(last_segment(d))));
            } else if is_account(name) {
                account_dirs.push(dir);
            }
        }
        let mut missing = Vec::new();
        if let Some(wanted) = &self.accounts {
            let found: BTreeSet<&str> = account_dirs.iter().map(|d| last_segment(d)).collect();
            missing = wanted.iter().filter(|a| !found.contains(a.as_str())).cloned().collect();
            account_dirs.retain(|d| wanted.iter().any(|a| a == last_segment(d)));
        }
        if account_dirs.is_empty() {
            let which = match &self.accounts {
                Some(a) => format!(" for accounts {}", a.join(", ")),
                None => String::new(),
            };
            return Err(SourceError::new(
                SourceErrorKind::NotFound,
                format!(
                    "no CloudTrail files in s3://{}/{root}{which}: check source.prefix (the part of the keys before \
                     AWSLogs/) and that the trail delivers to this bucket",
                    self.bucket
                ),
            ));
        }
        let mut regions = Vec::new();
        for account in account_dirs {
            let trail = format!("{account}CloudTrail/");
            match &self.regions {
                Some(list) => regions.extend(list.iter().map(|r| format!("{trail}{r}/"))),
                None => regions.extend(self.folders(&trail).await?),
            }
        }
        regions.sort();
        Ok((regions, missing))
    }

    /// The day prefixes of `region` that can hold files delivered within `window`.
    async fn days(&self, region: &str, window: Window) -> Result<Vec<String>, SourceError> {
        let first = (window.start - KEY_LAG).date_naive();
        let last = window.end.date_naive();
        if (last - first).num_days() <= LIST_DAYS_UP_TO {
            return Ok(first.iter_days().take_while(|d| *d <= last).map(|d| day_prefix(region, d)).collect());
        }
        // A long window (a scan of everything): the days the bucket holds, level by level.
        let mut out = Vec::new();
        for y in self.folders(region).await? {
            let Ok(year) = last_segment(&y).parse::<i32>() else { continue };
            if year < first.year() || year > last.year() {
                continue;
            }
            for m in self.folders(&y).await? {
                let Ok(month) = last_segment(&m).parse::<u32>() else { continue };
                for d in self.folders(&m).await? {
                    let Some(day) = last_segment(&d).parse().ok().and_then(|n| NaiveDate::from_ymd_opt(year, month, n))
                    else {
                        continue;
                    };
                    if day >= first && day <= last {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The objects under one day prefix delivered within `window`, in key order.
    async fn delivered_on(&self, day: String, window: Window) -> Result<Vec<Listed>, SourceError> {
        let (objects, _) = self.list(&day, false).await?;
        let mut out = Vec::new();
        for o in objects {
            let (Some(key), Some(modified)) = (o.key(), o.last_modified()) else { continue };
            let Some(at) = DateTime::<Utc>::from_timestamp(modified.secs(), modified.subsec_nanos()) else {
                continue;
            };
            if at >= window.start && at < window.end && is_record_key(key) {
                out.push(Listed { key: key.to_string(), size: o.size().unwrap_or(0) });
            }
        }
        Ok(out)
    }

    /// One object's records as bytes. `Ok(Err)`: this object could not be read (the run
    /// names it and goes on); `Err`: nothing can be (the bucket, access, throttling).
    async fn fetch(&self, object: &Listed) -> Result<Result<Vec<u8>, String>, SourceError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let answer = self
                .call_classified("GetObject", || self.client.get_object().bucket(&self.bucket).key(&object.key).send())
                .await;
            let out = match answer {
                Ok(out) => out,
                Err((err, _)) if matches!(&err.failure, Failure::Service { code, .. } if code == "NoSuchKey") => {
                    return Ok(Err("deleted since it was listed".into()));
                }
                Err((err, attempts)) => return Err(self.explain("GetObject", &err, attempts)),
            };
            let promised = out.content_length().unwrap_or(object.size);
            match out.body.collect().await {
                Ok(body) => {
                    let raw = body.into_bytes();
                    self.counters.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
                    let name = object.key.clone();
                    let decoded = tokio::task::spawn_blocking(move || read_bytes(&name, &raw))
                        .await
                        .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))?;
                    return Ok(decoded);
                }
                // The connection ended before the body did: a transfer fault, tried again.
                Err(e) if attempt < self.settings.max_attempts => {
                    tracing::debug!(key = %object.key, error = %e, attempt, "S3 download cut short, retrying");
                    tokio::time::sleep(backoff(self.settings.retry_base, attempt)).await;
                }
                Err(e) => {
                    return Ok(Err(format!(
                        "the download kept ending before its {promised} bytes ({e}), {attempt} attempts"
                    )));
                }
            }
        }
    }
}

fn last_segment(prefix: &str) -> &str {
    prefix.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

fn is_account(name: &str) -> bool {
    name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit())
}

fn is_record_key(key: &str) -> bool {
    key.ends_with(".json.gz") || key.ends_with(".json")
}

fn day_prefix(region: &str, day: NaiveDate) -> String {
    format!("{region}{:04}/{:02}/{:02}/", day.year(), day.month(), day.day())
}

#[async_trait]
impl LogSource for S3Source {
    async fn read_errors(
        &self,
        _group: &str,
        window: Window,
        clusterer: &mut Clusterer,
    ) -> Result<ReadNotes, SourceError> {
        let (regions, missing) = self.regions_found.get_or_try_init(|| self.find_regions()).await?;
        let mut notes = ReadNotes::default();
        for account in missing {
            notes.problems.push(format!("account {account}: no CloudTrail files under {}", self.logs_root()));
        }
        if window.is_empty() {
            return Ok(notes);
        }
        let mut days = Vec::new();
        for region in regions {
            days.extend(self.days(region, window).await?);
        }
        // Day by day, in key order: listing runs ahead of fetching by a day at most, so a
        // window of a year holds a day's keys, not the year's, and at most
        // `objects_in_flight` objects.
        let in_flight_max = self.settings.objects_in_flight.max(1);
        let mut days = days.into_iter();
        let mut listed: std::collections::VecDeque<Listed> = std::collections::VecDeque::new();
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let (mut total, mut seen) = (0u64, 0u64);
        loop {
            while in_flight.len() < in_flight_max {
                if let Some(object) = listed.pop_front() {
                    in_flight.push_back(async move {
                        let result = self.fetch(&object).await;
                        (object, result)
                    });
                } else if let Some(day) = days.next() {
                    let found = self.delivered_on(day, window).await?;
                    seen += found.len() as u64;
                    listed.extend(found);
                } else {
                    break;
                }
            }
            let Some((object, result)) = in_flight.next().await else { break };
            total += 1;
            if let Some(p) = &self.progress {
                p(total, seen);
            }
            if let Err(problem) = result?.and_then(|bytes| ingest_file(&bytes, clusterer)) {
                notes.bad_files += 1;
                if notes.problems.len() < MAX_LISTED_PROBLEMS {
                    notes.problems.push(format!("{}: {problem}", object.key));
                }
                tracing::warn!(key = %object.key, %problem, "an S3 object could not be read, or not whole");
            }
        }
        *self.last_listing.lock().unwrap_or_else(|e| e.into_inner()) = Some((window, total as usize));
        notes.unless_all_bad(total)
    }

    fn sees_every_record(&self) -> bool {
        true
    }

    fn selects_by_delivery(&self) -> bool {
        true
    }

    async fn window_has_records(&self, _group: &str, window: Window) -> Option<bool> {
        match *self.last_listing.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((w, objects)) if w == window => Some(objects > 0),
            _ => None,
        }
    }

    fn counters(&self) -> &SourceCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn paths_are_read_level_by_level() {
        assert_eq!(last_segment("trail/AWSLogs/o-abc123/"), "o-abc123");
        assert_eq!(last_segment("AWSLogs/111122223333/CloudTrail/eu-west-1/"), "eu-west-1");
        assert!(is_account("111122223333") && !is_account("o-abc123") && !is_account("11112222333"));
        assert!(is_record_key("a/b_CloudTrail_us-east-1_20240101T0000Z_x.json.gz"));
        assert!(!is_record_key("AWSLogs/111122223333/CloudTrail-Digest/x.json.gz.sig"));
        let d = NaiveDate::from_ymd_opt(2024, 3, 5).unwrap();
        assert_eq!(day_prefix("AWSLogs/1/CloudTrail/us-east-1/", d), "AWSLogs/1/CloudTrail/us-east-1/2024/03/05/");
    }

    /// A window is looked for under its own days and the day before it: a file stamped
    /// just before midnight and delivered after it lives under the earlier day.
    #[test]
    fn a_window_lists_the_days_files_delivered_in_it_can_be_under() {
        let w = Window {
            start: Utc.with_ymd_and_hms(2024, 3, 5, 0, 10, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 3, 5, 1, 10, 0).unwrap(),
        };
        let first = (w.start - KEY_LAG).date_naive();
        assert_eq!(first, NaiveDate::from_ymd_opt(2024, 3, 4).unwrap());
        assert_eq!(w.end.date_naive(), NaiveDate::from_ymd_opt(2024, 3, 5).unwrap());
    }
}
