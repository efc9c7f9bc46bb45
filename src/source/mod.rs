//! Where CloudTrail records come from. A source feeds the records of one log group and window
//! into a [`Clusterer`]; the runner decides which windows and merges the results. Sources:
//! CloudWatch Logs ([`cloudwatch`]), CloudTrail files on disk ([`files`]) and in S3 ([`s3`]).

mod aws_error;
pub mod cloudwatch;
pub mod files;
mod limiter;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::engine::Clusterer;
use crate::model::inspection::{Inspection, SourceSettings};

pub use limiter::RateLimiter;

/// A half-open time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// Why a log group could not be read. The message is what users see on the run; it never
/// holds credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: SourceErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The log group does not exist.
    NotFound,
    /// Credentials are missing, expired or not allowed to read.
    Denied,
    /// Throttling, 5xx or timeouts outlasted the retries.
    Unavailable,
    /// Anything else (bad parameters, unexpected answers).
    Other,
}

impl SourceError {
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        SourceError { kind, message: message.into() }
    }
}

/// Counters a source keeps for the run's record.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub api_calls: std::sync::atomic::AtomicU64,
    pub throttled: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    /// Calls by operation and outcome, for the metrics.
    pub calls: std::sync::Mutex<std::collections::BTreeMap<crate::metrics::AwsCallKey, u64>>,
}

impl SourceCounters {
    /// One call of `operation` ended so.
    pub fn call_ended(&self, operation: &'static str, outcome: crate::metrics::AwsOutcome) {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner()).entry((operation, outcome)).or_default() += 1;
    }
}

/// What a read noticed without failing: files that could not be read, for instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadNotes {
    pub bad_files: u64,
    /// Answer rows that lacked the fields asked for, so the records they stand for were not
    /// counted.
    pub unusable_rows: u64,
    /// Whether the window held no record at all, not even a non-error one: `None` when the
    /// source cannot tell.
    pub window_empty: Option<bool>,
    /// One line per problem (bounded), shown on the run.
    pub problems: Vec<String>,
}

impl ReadNotes {
    /// These notes, or an error naming the first few problems when every one of the `tried`
    /// files (or objects) was bad: a read that got nothing must not pass for an empty one.
    pub fn unless_all_bad(self, tried: u64) -> Result<ReadNotes, SourceError> {
        if tried == 0 || self.bad_files != tried {
            return Ok(self);
        }
        let first: Vec<&str> = self.problems.iter().take(3).map(String::as_str).collect();
        let more = if self.bad_files > first.len() as u64 { "; …" } else { "" };
        let what =
            if self.bad_files == 1 { "the file".to_string() } else { format!("any of the {} files", self.bad_files) };
        Err(SourceError::new(SourceErrorKind::Other, format!("could not read {what}: {}{more}", first.join("; "))))
    }

    /// Adds the notes of another read of the same group (its baseline): a file both reads
    /// found bad is listed and counted once.
    pub fn absorb(&mut self, other: ReadNotes) {
        let mut repeated = 0;
        for p in other.problems {
            if self.problems.contains(&p) {
                repeated += 1;
            } else {
                self.problems.push(p);
            }
        }
        self.bad_files += other.bad_files - repeated;
        self.unusable_rows += other.unusable_rows;
    }
}

#[async_trait]
pub trait LogSource: Send + Sync {
    /// Feeds the error records of `group` within `window` into `clusterer`. The selection of
    /// error records is the clusterer's: a source may pre-filter, never post-filter.
    async fn read_errors(
        &self,
        group: &str,
        window: Window,
        clusterer: &mut Clusterer,
    ) -> Result<ReadNotes, SourceError>;

    /// True when `read_errors` hands over every record (not only errors), so the clusterer
    /// tracks access keys itself and selects the window by `eventTime`.
    fn sees_every_record(&self) -> bool {
        false
    }

    /// True when a window selects whole files by when they were delivered, not records by
    /// `eventTime`: every record of a file delivered in the window counts, whatever its time,
    /// so a late file is read by the run whose window holds its delivery.
    fn selects_by_delivery(&self) -> bool {
        false
    }

    /// Feeds the access-key activity of `groups` within `window` into `clusterer`. Nothing to
    /// do for a source that [`sees_every_record`](Self::sees_every_record): `read_errors`
    /// handed the clusterer every record, keys included.
    async fn read_key_activity(
        &self,
        _groups: &[String],
        _window: Window,
        _clusterer: &mut Clusterer,
    ) -> Result<(), SourceError> {
        Ok(())
    }

    /// Whether `group` holds any record at all (errors or not) within `window`, when the
    /// source can tell cheaply; asked only of windows that gave no record to the clusterer.
    async fn window_has_records(&self, _group: &str, _window: Window) -> Option<bool> {
        None
    }

    /// AWS (or other remote) calls made so far.
    fn counters(&self) -> &SourceCounters;
}

/// Builds the source of an inspection; shared state (rate limits) lives here, across runs.
#[async_trait]
pub trait SourceFactory: Send + Sync {
    async fn for_inspection(&self, inspection: &Inspection) -> anyhow::Result<Arc<dyn LogSource>>;
}

/// Picks the source an inspection names.
pub struct Sources {
    pub cloudwatch: cloudwatch::CloudWatchFactory,
    pub s3: s3::S3Factory,
    /// Progress of file reads (the `scan` command's progress bar).
    pub file_progress: Option<files::Progress>,
    /// Where file sources may read, checked at every read.
    pub files: files::FilesAccess,
    /// Threads reading files at once; None for every core.
    pub file_jobs: Option<usize>,
}

#[async_trait]
impl SourceFactory for Sources {
    async fn for_inspection(&self, inspection: &Inspection) -> anyhow::Result<Arc<dyn LogSource>> {
        match &inspection.settings.source {
            SourceSettings::CloudwatchLogs => self.cloudwatch.for_inspection(inspection).await,
            SourceSettings::S3 { .. } => self.s3.for_inspection(inspection).await,
            SourceSettings::Files { .. } => {
                let source = match &self.file_progress {
                    Some(p) => files::FilesSource::with_progress(self.files.clone(), p.clone()),
                    None => files::FilesSource::new(self.files.clone()),
                };
                Ok(Arc::new(match self.file_jobs {
                    Some(n) => source.with_jobs(n),
                    None => source,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadNotes;

    #[test]
    fn a_read_whose_every_file_was_bad_is_an_error() {
        let notes = |bad: u64, problems: &[&str]| ReadNotes {
            bad_files: bad,
            problems: problems.iter().map(|p| p.to_string()).collect(),
            ..ReadNotes::default()
        };
        assert!(notes(0, &[]).unless_all_bad(0).is_ok(), "nothing tried");
        assert!(notes(1, &["a: cut short"]).unless_all_bad(2).is_ok(), "one good file");
        let one = notes(1, &["a: cut short"]).unless_all_bad(1).unwrap_err();
        assert_eq!(one.message, "could not read the file: a: cut short");
        let five = notes(5, &["a", "b", "c", "d", "e"]).unless_all_bad(5).unwrap_err();
        assert_eq!(five.message, "could not read any of the 5 files: a; b; c; …");
    }

    #[test]
    fn a_file_bad_in_both_reads_is_counted_once() {
        let notes = |p: &[&str]| ReadNotes {
            bad_files: p.len() as u64,
            problems: p.iter().map(|s| s.to_string()).collect(),
            ..ReadNotes::default()
        };
        let mut window = notes(&["a.json: not JSON", "b.json.gz: bad gzip"]);
        window.absorb(notes(&["b.json.gz: bad gzip", "c.json: not JSON"]));
        assert_eq!(window.bad_files, 3);
        assert_eq!(window.problems, ["a.json: not JSON", "b.json.gz: bad gzip", "c.json: not JSON"]);
    }
}
