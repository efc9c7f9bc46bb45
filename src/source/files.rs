//! CloudTrail files on disk as a source: the tree CloudTrail delivers to S3
//! (`AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz`, each `{"Records": [...]}`),
//! and also JSON arrays of records and one-record-per-line files, plain or gzipped.
//!
//! Every record is read, so access-key activity comes from the same pass and the run's window
//! selects records by `eventTime`. A file that cannot be read (not JSON, truncated gzip, wrong
//! shape) is reported and skipped; the others are still read.

use std::io::Read;
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
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

/// Where file sources may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesAccess {
    /// Anywhere this process can: the `scan` command reads what its own user names.
    Anywhere,
    /// Only under this directory (the service's `--files-root`), checked at every read.
    Under(PathBuf),
    /// Nowhere: the service without `--files-root`. Inspections saved while a root was
    /// configured keep their path but read nothing.
    Nowhere,
}

pub struct FilesSource {
    counters: SourceCounters,
    progress: Option<Progress>,
    access: FilesAccess,
}

impl FilesSource {
    pub fn new(access: FilesAccess) -> Self {
        FilesSource { counters: SourceCounters::default(), progress: None, access }
    }

    pub fn with_progress(access: FilesAccess, progress: Progress) -> Self {
        FilesSource { progress: Some(progress), ..FilesSource::new(access) }
    }
}

/// The one answer for a path that may not be read, whatever the reason (outside the root,
/// missing, a link, unreadable): a caller learns nothing about paths outside the root.
pub const NOT_UNDER_ROOT: &str = "must be a readable file or directory under the service's files root \
    (links are not followed)";

/// Where `path` (absolute, or relative to the root) lies, relative to the real `root`, if it
/// lies under it. Decided on the text alone (no `..`, no lookup), so nothing outside the root
/// is ever looked at; links under the root are refused when they are opened.
pub fn relative_to_root(real_root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = if path.is_absolute() { path.strip_prefix(real_root).ok()? } else { path };
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(name) => out.push(name),
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Checks that `path` can be read under `root` as a run would read it, and returns the
/// absolute path to store. Errors are [`NOT_UNDER_ROOT`] alike.
pub fn resolve_under(root: &Path, path: &str) -> Result<PathBuf, &'static str> {
    let tree = Tree::open(root).map_err(|_| "the service's files root is not available")?;
    let rel = relative_to_root(&tree.real, Path::new(path)).ok_or(NOT_UNDER_ROOT)?;
    tree.kind(&rel).map_err(|_| NOT_UNDER_ROOT)?;
    Ok(tree.real.join(rel))
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
    read_opened(path, file)
}

/// Reads an opened file whole (decompressed when its name ends in `.gz`), up to the cap.
fn read_opened(path: &Path, file: std::fs::File) -> Result<Vec<u8>, String> {
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

/// How one run reads its files: by path, or confined to a tree opened link by link.
enum Reader {
    Anywhere,
    Confined { tree: Tree, rel: PathBuf },
}

impl Reader {
    /// Checks the group's path against the access at the time of the read: the root may have
    /// been unset since the inspection was saved, or a directory replaced by a link.
    fn new(access: &FilesAccess, group: &Path) -> Result<Self, SourceError> {
        match access {
            FilesAccess::Anywhere => Ok(Reader::Anywhere),
            FilesAccess::Nowhere => Err(SourceError::new(
                SourceErrorKind::Denied,
                "file sources are disabled on this service; start it with --files-root <dir>",
            )),
            FilesAccess::Under(root) => {
                let denied = |m: &str| SourceError::new(SourceErrorKind::Denied, format!("{}: {m}", group.display()));
                let tree = Tree::open(root).map_err(|_| denied("the service's files root is not available"))?;
                let rel = relative_to_root(&tree.real, group).ok_or_else(|| denied(NOT_UNDER_ROOT))?;
                Ok(Reader::Confined { tree, rel })
            }
        }
    }

    fn list(&self, group: &Path) -> Result<Vec<PathBuf>, SourceError> {
        match self {
            Reader::Anywhere => list_files(group).map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    SourceErrorKind::NotFound
                } else {
                    SourceErrorKind::Denied
                };
                SourceError::new(kind, format!("cannot read {}: {e}", group.display()))
            }),
            Reader::Confined { tree, rel } => {
                tree.list(rel).map(|files| files.into_iter().map(|f| tree.real.join(f)).collect()).map_err(|_| {
                    SourceError::new(SourceErrorKind::Denied, format!("{}: {NOT_UNDER_ROOT}", group.display()))
                })
            }
        }
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        match self {
            Reader::Anywhere => read_file(path),
            Reader::Confined { tree, .. } => {
                let rel = relative_to_root(&tree.real, path).ok_or_else(|| NOT_UNDER_ROOT.to_string())?;
                let file = tree.open_file(&rel).map_err(|e| format!("cannot open: {e}"))?;
                read_opened(path, file)
            }
        }
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
        let reader = Arc::new(Reader::new(&self.access, &root)?);
        let listed = {
            let (root, reader) = (root.clone(), reader.clone());
            tokio::task::spawn_blocking(move || reader.list(&root))
                .await
                .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))?
        };
        let files = listed?;
        let total = files.len() as u64;
        let mut notes = ReadNotes::default();
        for (i, path) in files.into_iter().enumerate() {
            if let Some(p) = &self.progress {
                p(i as u64, total);
            }
            if !may_overlap(&path, window) {
                continue;
            }
            let (p, reader) = (path.clone(), reader.clone());
            let bytes = tokio::task::spawn_blocking(move || reader.read(&p))
                .await
                .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))?;
            let result = bytes.and_then(|b| {
                self.counters.bytes.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                ingest_bytes(&b, clusterer)
            });
            if let Err(problem) = result {
                notes.bad_files += 1;
                if notes.problems.len() < MAX_LISTED_PROBLEMS {
                    let shown = path.strip_prefix(&root).unwrap_or(&path);
                    notes.problems.push(format!("{}: {problem}", shown.display()));
                }
                tracing::warn!(file = %path.display(), %problem, "skipped a file that could not be read");
            }
            // A long scan must not starve the runtime's other tasks.
            tokio::task::yield_now().await;
        }
        if let Some(p) = &self.progress {
            p(total, total);
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

/// A directory tree opened once by its real path, then walked and read one component at a
/// time, never following a link (`O_NOFOLLOW` on every component): a directory swapped for a
/// link to somewhere else, even while a run reads, is refused rather than followed.
#[cfg(unix)]
struct Tree {
    real: PathBuf,
    fd: rustix::fd::OwnedFd,
}

#[cfg(unix)]
impl Tree {
    fn open(root: &Path) -> std::io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let real = std::fs::canonicalize(root)?;
        let fd = rustix::fs::open(&real, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Tree { real, fd })
    }

    /// Opens `rel` under the root. Every component but the last must be a directory; the
    /// last is opened non-blocking, so a FIFO planted in the tree cannot stall a run.
    fn open_rel(&self, rel: &Path) -> std::io::Result<rustix::fd::OwnedFd> {
        use rustix::fs::{Mode, OFlags};
        let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur = rustix::fs::openat(&self.fd, ".", base | OFlags::DIRECTORY, Mode::empty())?;
        let names: Vec<&std::ffi::OsStr> = rel.iter().collect();
        for (i, name) in names.iter().enumerate() {
            let flags = if i + 1 == names.len() { base | OFlags::NONBLOCK } else { base | OFlags::DIRECTORY };
            cur = rustix::fs::openat(&cur, *name, flags, Mode::empty())?;
        }
        Ok(cur)
    }

    fn kind(&self, rel: &Path) -> std::io::Result<rustix::fs::FileType> {
        let fd = self.open_rel(rel)?;
        Ok(rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode))
    }

    fn open_file(&self, rel: &Path) -> std::io::Result<std::fs::File> {
        let fd = self.open_rel(rel)?;
        if rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(std::fs::File::from(fd))
    }

    /// Record files at or under `rel`, relative to the root and sorted; links and other
    /// special files are passed over.
    fn list(&self, rel: &Path) -> std::io::Result<Vec<PathBuf>> {
        use rustix::fs::FileType;
        let mut out = Vec::new();
        match self.kind(rel)? {
            FileType::RegularFile => out.push(rel.to_path_buf()),
            FileType::Directory => {
                let mut stack = vec![rel.to_path_buf()];
                while let Some(dir) = stack.pop() {
                    let fd = self.open_rel(&dir)?;
                    for entry in rustix::fs::Dir::read_from(&fd)? {
                        let entry = entry?;
                        let name = std::ffi::OsStr::from_bytes(entry.file_name().to_bytes());
                        if name == "." || name == ".." {
                            continue;
                        }
                        let path = dir.join(name);
                        let kind = match entry.file_type() {
                            FileType::Unknown => rustix::fs::FileType::from_raw_mode(
                                rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
                            ),
                            known => known,
                        };
                        match kind {
                            FileType::Directory => stack.push(path),
                            FileType::RegularFile if is_record_file(&path) => out.push(path),
                            _ => {}
                        }
                    }
                }
            }
            _ => return Err(std::io::Error::other("not a file or directory")),
        }
        out.sort();
        Ok(out)
    }
}

/// Elsewhere: the real path of every file is checked against the root before it is opened.
#[cfg(not(unix))]
struct Tree {
    real: PathBuf,
}

#[cfg(not(unix))]
impl Tree {
    fn open(root: &Path) -> std::io::Result<Self> {
        Ok(Tree { real: std::fs::canonicalize(root)? })
    }

    fn checked(&self, rel: &Path) -> std::io::Result<PathBuf> {
        let real = std::fs::canonicalize(self.real.join(rel))?;
        if real.starts_with(&self.real) { Ok(real) } else { Err(std::io::Error::other("outside the root")) }
    }

    fn kind(&self, rel: &Path) -> std::io::Result<std::fs::FileType> {
        Ok(std::fs::symlink_metadata(self.checked(rel)?)?.file_type())
    }

    fn open_file(&self, rel: &Path) -> std::io::Result<std::fs::File> {
        std::fs::File::open(self.checked(rel)?)
    }

    fn list(&self, rel: &Path) -> std::io::Result<Vec<PathBuf>> {
        let found = list_files(&self.checked(rel)?)?;
        Ok(found.into_iter().filter_map(|p| p.strip_prefix(&self.real).ok().map(Path::to_path_buf)).collect())
    }
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
