//! CloudTrail files on disk as a source: the tree CloudTrail delivers to S3
//! (`AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz`, each `{"Records": [...]}`),
//! and also JSON arrays of records and one-record-per-line files, plain or gzipped.
//!
//! Every record is read, so access-key activity comes from the same pass and the run's window
//! selects records by `eventTime`. A file that cannot be read (not JSON, truncated gzip, wrong
//! shape) is reported and skipped; the others are still read.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{LogSource, ReadNotes, SourceCounters, SourceError, SourceErrorKind, Window};
use crate::engine::Clusterer;

/// Largest file read (decompressed): CloudTrail files are a few MB at most.
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// Bad files listed per run; further ones are only counted.
const MAX_LISTED_PROBLEMS: usize = 100;

/// Reports files done and files in all, for a progress bar.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

#[derive(Default)]
pub struct FilesSource {
    counters: SourceCounters,
    progress: Option<Progress>,
}

impl FilesSource {
    pub fn new() -> Self {
        FilesSource::default()
    }

    pub fn with_progress(progress: Progress) -> Self {
        FilesSource { counters: SourceCounters::default(), progress: Some(progress) }
    }
}

/// Files under `root` that may hold CloudTrail records, sorted so runs are repeatable.
pub fn list_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if root.is_file() {
        out.push(root.to_path_buf());
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && is_record_file(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_record_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [".json", ".json.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"].iter().any(|ext| name.ends_with(ext))
}

/// The day of a file in CloudTrail's `…/YYYY/MM/DD/…` layout, if its path has one.
fn layout_day(path: &Path) -> Option<NaiveDate> {
    let parts: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
    parts.windows(3).rev().find_map(|w| {
        let (y, m, d) = (w[0], w[1], w[2]);
        if y.len() == 4 && m.len() == 2 && d.len() == 2 {
            NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
        } else {
            None
        }
    })
}

/// Whether a file can hold records of the window. CloudTrail files are dated by delivery,
/// which lags events by minutes, so a day's margin on each side.
fn may_overlap(path: &Path, window: Window) -> bool {
    match layout_day(path) {
        None => true,
        Some(day) => {
            let Some(start) = day.and_hms_opt(0, 0, 0).map(|d| d.and_utc()) else { return true };
            let end = start + TimeDelta::days(1);
            end + TimeDelta::days(1) > window.start && start - TimeDelta::days(1) < window.end
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    let name = path.to_string_lossy();
    let result = if name.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)
    } else {
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)
    };
    result.map_err(|e| if name.ends_with(".gz") { format!("bad gzip: {e}") } else { format!("cannot read: {e}") })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {} MB", MAX_FILE_BYTES / 1024 / 1024));
    }
    Ok(bytes)
}

#[derive(Deserialize)]
struct Delivery<'a> {
    #[serde(borrow, rename = "Records")]
    records: Vec<&'a RawValue>,
}

/// Feeds every record of one file's bytes to the clusterer; returns how many there were.
pub fn ingest_bytes(bytes: &[u8], clusterer: &mut Clusterer) -> Result<u64, String> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = text.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else { return Ok(0) };
    match text[first] {
        b'[' => {
            let records: Vec<&RawValue> =
                serde_json::from_slice(text).map_err(|e| format!("not a JSON array of records: {e}"))?;
            for r in &records {
                clusterer.ingest(r.get().as_bytes());
            }
            Ok(records.len() as u64)
        }
        b'{' => match serde_json::from_slice::<Delivery>(text) {
            Ok(doc) => {
                for r in &doc.records {
                    clusterer.ingest(r.get().as_bytes());
                }
                Ok(doc.records.len() as u64)
            }
            // Not one {"Records": [...]} document: one record per line, if every line is JSON.
            Err(doc_err) => {
                let lines: Vec<&[u8]> =
                    text.split(|b| *b == b'\n').filter(|l| l.iter().any(|b| !b.is_ascii_whitespace())).collect();
                // A lone object without "Records" is a file holding one record.
                let lone_record = lines.len() == 1 && doc_err.to_string().starts_with("missing field");
                if lines.len() < 2 && !lone_record {
                    return Err(format!("not a CloudTrail file ({{\"Records\": [...]}}): {doc_err}"));
                }
                let mut n = 0;
                for line in lines {
                    clusterer.ingest(line.trim_ascii());
                    n += 1;
                }
                Ok(n)
            }
        },
        _ => Err("not JSON".into()),
    }
}

#[async_trait]
impl LogSource for FilesSource {
    async fn read_errors(
        &self,
        group: &str,
        window: Window,
        clusterer: &mut Clusterer,
    ) -> Result<ReadNotes, SourceError> {
        let root = PathBuf::from(group);
        let listed = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || list_files(&root))
                .await
                .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))?
        };
        let files = listed.map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                SourceErrorKind::NotFound
            } else {
                SourceErrorKind::Denied
            };
            SourceError::new(kind, format!("cannot read {}: {e}", root.display()))
        })?;
        if files.is_empty() {
            return Err(SourceError::new(
                SourceErrorKind::NotFound,
                format!("no CloudTrail files in {} (.json, .jsonl or .ndjson, plain or .gz)", root.display()),
            ));
        }
        let total = files.len() as u64;
        let mut notes = ReadNotes::default();
        let mut tried = 0u64;
        for (i, path) in files.into_iter().enumerate() {
            if let Some(p) = &self.progress {
                p(i as u64, total);
            }
            if !may_overlap(&path, window) {
                continue;
            }
            tried += 1;
            let p = path.clone();
            let bytes = tokio::task::spawn_blocking(move || read_file(&p))
                .await
                .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))?;
            let result = bytes.and_then(|b| {
                self.counters.bytes.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                ingest_bytes(&b, clusterer)
            });
            if let Err(problem) = result {
                notes.bad_files += 1;
                if notes.problems.len() < MAX_LISTED_PROBLEMS {
                    notes.problems.push(format!("{}: {problem}", shown_path(&path, &root).display()));
                }
                tracing::warn!(file = %path.display(), %problem, "skipped a file that could not be read");
            }
            // A long scan must not starve the runtime's other tasks.
            tokio::task::yield_now().await;
        }
        if let Some(p) = &self.progress {
            p(total, total);
        }
        if tried > 0 && notes.bad_files == tried {
            return Err(none_readable(&notes));
        }
        Ok(notes)
    }

    async fn read_key_activity(&self, _: &[String], _: Window, _: &mut Clusterer) -> Result<(), SourceError> {
        Ok(()) // read_errors saw every record already
    }

    fn sees_every_record(&self) -> bool {
        true
    }

    fn counters(&self) -> &SourceCounters {
        &self.counters
    }
}

/// A file as problems name it: relative to the directory read, or whole when it is the
/// file that was read.
fn shown_path<'a>(path: &'a Path, root: &Path) -> &'a Path {
    match path.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel,
        _ => path,
    }
}

/// Why nothing could be read when every file tried was bad: the first few problems.
fn none_readable(notes: &ReadNotes) -> SourceError {
    let first: Vec<&str> = notes.problems.iter().take(3).map(String::as_str).collect();
    let more = if notes.bad_files > first.len() as u64 { "; …" } else { "" };
    let what =
        if notes.bad_files == 1 { "the file".to_string() } else { format!("any of the {} files", notes.bad_files) };
    SourceError::new(SourceErrorKind::Other, format!("could not read {what}: {}{more}", first.join("; ")))
}

/// The widest window a file scan can ask for: everything CloudTrail ever wrote, up to now.
pub fn all_time(now: DateTime<Utc>) -> Window {
    Window { start: DateTime::<Utc>::from_timestamp(0, 0).unwrap_or(now), end: now + TimeDelta::days(1) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ClustererConfig;
    use chrono::TimeZone;

    #[test]
    fn problems_name_the_file_even_when_it_is_the_target() {
        let root = Path::new("/data/AWSLogs");
        assert_eq!(shown_path(Path::new("/data/AWSLogs/2023/07/a.json"), root), Path::new("2023/07/a.json"));
        let file = Path::new("/data/dump.json");
        assert_eq!(shown_path(file, file), file);
    }

    #[test]
    fn layout_days_are_read_from_paths() {
        let p = Path::new("AWSLogs/123/CloudTrail/us-east-1/2023/07/10/123_CloudTrail_x.json.gz");
        assert_eq!(layout_day(p), NaiveDate::from_ymd_opt(2023, 7, 10));
        assert_eq!(layout_day(Path::new("dump/records.json")), None);
        let w = Window {
            start: Utc.with_ymd_and_hms(2023, 7, 12, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2023, 7, 13, 0, 0, 0).unwrap(),
        };
        assert!(!may_overlap(p, w), "two days before the window");
        let w = Window { start: Utc.with_ymd_and_hms(2023, 7, 11, 0, 0, 0).unwrap(), ..w };
        assert!(may_overlap(p, w), "late delivery margin");
    }

    #[test]
    fn three_file_shapes_and_bad_ones() {
        let rec = r#"{"eventTime":"2023-07-10T11:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","errorCode":"AccessDenied","errorMessage":"Access Denied"}"#;
        for (bytes, n) in [
            (format!("{{\"Records\":[{rec},{rec}]}}"), 2),
            (format!("[{rec}]"), 1),
            (format!("{rec}\n{rec}\n\n{rec}\n"), 3),
            (String::new(), 0),
            (rec.to_string(), 1),
        ] {
            let mut c = Clusterer::new(ClustererConfig { track_keys: true, ..ClustererConfig::default() });
            assert_eq!(ingest_bytes(bytes.as_bytes(), &mut c), Ok(n));
            assert_eq!(c.stats().error_records, n);
        }
        for bad in ["not json", "{\"Records\": 5}", "[1, 2", "{\"Records\": [{}]"] {
            let mut c = Clusterer::new(ClustererConfig::default());
            assert!(ingest_bytes(bad.as_bytes(), &mut c).is_err(), "{bad}");
        }
    }
}
