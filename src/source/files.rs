//! CloudTrail files on disk as a source: the tree CloudTrail delivers to S3
//! (`AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz`, each `{"Records": [...]}`),
//! and also JSON arrays of records and one-record-per-line files, plain or gzipped.
//!
//! Every record is read, so access-key activity comes from the same pass and the run's window
//! selects records by `eventTime`. Files are read record by record (any mix of the shapes
//! above, pretty-printed or not): a broken record costs itself only. A file that cannot be read,
//! or not to its end (not JSON, truncated gzip or JSON), is reported; whatever could be read of
//! it is, and the other files are still read.

use std::io::Read;
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use super::{LogSource, ReadNotes, SourceCounters, SourceError, SourceErrorKind, Window};
use crate::engine::{Clusterer, Split, split_records};

/// Largest file read (decompressed): CloudTrail files are a few MB at most.
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// Bad files listed per run; further ones are only counted.
pub(super) const MAX_LISTED_PROBLEMS: usize = 100;

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
    jobs: usize,
}

impl FilesSource {
    pub fn new(access: FilesAccess) -> Self {
        FilesSource { counters: SourceCounters::default(), progress: None, access, jobs: default_jobs() }
    }

    pub fn with_progress(access: FilesAccess, progress: Progress) -> Self {
        FilesSource { progress: Some(progress), ..FilesSource::new(access) }
    }

    /// Reads with `jobs` threads (at least one), each decompressing and parsing whole files.
    pub fn with_jobs(self, jobs: usize) -> Self {
        FilesSource { jobs: jobs.max(1), ..self }
    }
}

/// The cores this process may use.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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

/// Files under `root` that may hold CloudTrail records, sorted so runs are repeatable: the
/// walk a read makes, whole.
pub fn list_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let reader = Reader::Anywhere;
    let top = if root.is_file() { vec![(root.to_path_buf(), false)] } else { reader.children(root)? };
    let mut walk = Walk { stack: vec![top.into_iter()] };
    std::iter::from_fn(|| walk.next(&reader)).collect()
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
fn read_opened(path: &Path, mut file: std::fs::File) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    if name.ends_with(".gz") && file.metadata().is_ok_and(|m| m.len() <= MAX_FILE_BYTES) {
        let mut gz = Vec::new();
        file.read_to_end(&mut gz).map_err(|e| format!("cannot read: {e}"))?;
        return read_bytes(&name, &gz);
    }
    read_stream(&name, file)
}

/// Reads one delivery file whose bytes are in memory (read from disk, or an S3 object) as
/// [`read_stream`] does, a single-member gzip file at once.
pub fn read_bytes(name: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    if name.ends_with(".gz") {
        if let Some(whole) = inflate_whole(bytes) {
            return Ok(whole);
        }
    }
    read_stream(name, bytes)
}

/// Reads one delivery file's bytes, from disk or from elsewhere (an S3 object), whole:
/// decompressed when `name` ends in `.gz`, up to the cap.
pub fn read_stream(name: &str, file: impl Read) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
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

/// A gzip file of one member, decompressed at once by libdeflate: 1.4× zlib-rs and 2×
/// miniz_oxide on delivery files (BENCHMARKS.md), and CloudTrail writes one member per file.
/// None, for the streaming decoder to read as far as it can and say what is wrong, unless
/// the file is surely one whole member: no second member's magic anywhere after the first (a
/// chance of about one in 16 million per byte, so a few percent of big files take the slower
/// way for nothing), and the file's last eight bytes are the trailer (CRC and size) of what
/// was decompressed, so nothing follows the member. A cut or corrupt file
/// fails libdeflate's own checks.
fn inflate_whole(gz: &[u8]) -> Option<Vec<u8>> {
    const MAGIC: &[u8] = &[0x1f, 0x8b, 0x08];
    if gz.len() < 18 || !gz.starts_with(MAGIC) || memchr::memmem::find(&gz[1..], MAGIC).is_some() {
        return None;
    }
    let trailer = &gz[gz.len() - 8..];
    let crc = u32::from_le_bytes(trailer[..4].try_into().ok()?);
    let size = u32::from_le_bytes(trailer[4..].try_into().ok()?);
    if u64::from(size) > MAX_FILE_BYTES {
        return None;
    }
    let mut out = vec![0u8; size as usize];
    let n = libdeflater::Decompressor::new().gzip_decompress(gz, &mut out).ok()?;
    (n == out.len() && libdeflater::crc32(&out) == crc).then_some(out)
}

/// Feeds every record of one file's bytes to the clusterer, record by record (see
/// [`split_records`]): how many there were, and what could not be read, if anything.
pub fn ingest_bytes(bytes: &[u8], clusterer: &mut Clusterer) -> Split {
    split_records(bytes, |raw| {
        clusterer.ingest(raw);
    })
}

/// Feeds one file's bytes to the clusterer; what could not be read of it, if anything, as
/// a run lists it.
pub fn ingest_file(bytes: &[u8], clusterer: &mut Clusterer) -> Result<(), String> {
    let split = ingest_bytes(bytes, clusterer);
    match split.problem {
        None => Ok(()),
        Some(p) if split.records == 0 => Err(p),
        Some(p) => Err(format!("{p} ({} records read)", split.records)),
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

    /// The group's files in sorted order, listed one directory at a time as the walk goes:
    /// a year of a trail is hundreds of thousands of files, and their list alone would grow
    /// with it.
    fn walk(&self, group: &Path) -> Result<Walk, SourceError> {
        let is_dir = match self {
            Reader::Anywhere => std::fs::metadata(group).map(|m| m.is_dir()),
            Reader::Confined { tree, rel } => tree.kind(rel).and_then(|k| match k {
                #[cfg(unix)]
                rustix::fs::FileType::RegularFile => Ok(false),
                #[cfg(unix)]
                rustix::fs::FileType::Directory => Ok(true),
                #[cfg(not(unix))]
                k if k.is_file() => Ok(false),
                #[cfg(not(unix))]
                k if k.is_dir() => Ok(true),
                _ => Err(std::io::Error::other("not a file or directory")),
            }),
        }
        .map_err(|e| self.list_error(group, &e))?;
        let at = match self {
            Reader::Anywhere => group.to_path_buf(),
            Reader::Confined { tree, rel } => tree.real.join(rel),
        };
        let top = if is_dir { self.children(&at).map_err(|e| self.list_error(group, &e))? } else { vec![(at, false)] };
        Ok(Walk { stack: vec![top.into_iter()] })
    }

    fn list_error(&self, group: &Path, e: &std::io::Error) -> SourceError {
        match self {
            Reader::Anywhere => {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    SourceErrorKind::NotFound
                } else {
                    SourceErrorKind::Denied
                };
                SourceError::new(kind, format!("cannot read {}: {e}", group.display()))
            }
            Reader::Confined { .. } => {
                SourceError::new(SourceErrorKind::Denied, format!("{}: {NOT_UNDER_ROOT}", group.display()))
            }
        }
    }

    /// The record files and the directories directly in `dir`, sorted by name, so a walk
    /// meets files in the order of the sorted full list.
    fn children(&self, dir: &Path) -> std::io::Result<Vec<(PathBuf, bool)>> {
        let mut out = match self {
            Reader::Anywhere => {
                let mut out = Vec::new();
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    let kind = entry.file_type()?;
                    let path = entry.path();
                    if kind.is_dir() {
                        out.push((path, true));
                    } else if kind.is_file() && is_record_file(&path) {
                        out.push((path, false));
                    }
                }
                out
            }
            Reader::Confined { tree, .. } => {
                let rel = relative_to_root(&tree.real, dir).ok_or_else(|| std::io::Error::other(NOT_UNDER_ROOT))?;
                tree.children(&rel)?.into_iter().map(|(p, d)| (tree.real.join(p), d)).collect()
            }
        };
        out.sort();
        Ok(out)
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
        let stop = Arc::new(AtomicBool::new(false));
        // A run dropped half-way (shutdown, cancellation) stops the workers after their file.
        let _stop = StopOnDrop(stop.clone());
        let (jobs, progress) = (self.jobs, self.progress.clone());
        let empty = clusterer.empty_like();
        let job_root = root.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<ReadResult, SourceError> {
            let walk = reader.walk(&job_root)?;
            // Only a progress bar needs the count before the end: a walk that only counts.
            let total = match &progress {
                Some(_) => {
                    let mut count = reader.walk(&job_root)?;
                    std::iter::from_fn(|| count.next(&reader)).take_while(Result::is_ok).count() as u64
                }
                None => 0,
            };
            let cursor = Cursor { walk, listed: 0, failed: None };
            let (group, errors) = (job_root.clone(), reader.clone());
            let job = ReadJob {
                cursor: std::sync::Mutex::new(cursor),
                window,
                total,
                root: job_root,
                reader,
                progress,
                stop,
            };
            let read = job.run(jobs, &empty);
            match &read.failed {
                Some(e) => Err(errors.list_error(&group, e)),
                None => Ok(read),
            }
        })
        .await
        .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))??;
        if read.listed == 0 {
            return Err(SourceError::new(
                SourceErrorKind::NotFound,
                format!("no CloudTrail files in {} (.json, .jsonl or .ndjson, plain or .gz)", root.display()),
            ));
        }
        self.counters.bytes.fetch_add(read.bytes, Ordering::Relaxed);
        for part in read.clusterers {
            clusterer.merge(part);
        }
        read.notes.unless_all_bad(read.tried)
    }

    fn sees_every_record(&self) -> bool {
        true
    }

    fn counters(&self) -> &SourceCounters {
        &self.counters
    }
}

/// A depth-first walk, each directory's entries sorted: the files come in the order of
/// their sorted full paths, and only the directories on the way down are held.
struct Walk {
    stack: Vec<std::vec::IntoIter<(PathBuf, bool)>>,
}

impl Walk {
    fn next(&mut self, reader: &Reader) -> Option<std::io::Result<PathBuf>> {
        loop {
            match self.stack.last_mut()?.next() {
                None => {
                    self.stack.pop();
                }
                Some((dir, true)) => match reader.children(&dir) {
                    Ok(children) => self.stack.push(children.into_iter()),
                    Err(e) => return Some(Err(e)),
                },
                Some((file, false)) => return Some(Ok(file)),
            }
        }
    }
}

/// Where the workers of a read take their next file.
struct Cursor {
    walk: Walk,
    /// Files met so far, skipped ones included: the place of the next one in the sorted list.
    listed: usize,
    /// Why the walk could not go on, if it could not.
    failed: Option<std::io::Error>,
}

/// The files of one read, shared out to workers.
struct ReadJob {
    cursor: std::sync::Mutex<Cursor>,
    window: Window,
    /// Files in all, when a progress is shown (counted by a first walk).
    total: u64,
    root: PathBuf,
    reader: Arc<Reader>,
    progress: Option<Progress>,
    stop: Arc<AtomicBool>,
}

/// What the workers of a read found, to merge into the run's clusterer.
struct ReadResult {
    clusterers: Vec<Clusterer>,
    notes: ReadNotes,
    bytes: u64,
    /// Files found, and of them those that may hold records of the window.
    listed: u64,
    tried: u64,
    /// Why the walk stopped early, if it did: the read then fails as a whole.
    failed: Option<std::io::Error>,
}

/// What one worker found: problems come with their file's place in the sorted list, so the
/// ones listed are the first in that order, as a one-worker read lists them.
#[derive(Default)]
struct WorkerNotes {
    tried: u64,
    bad_files: u64,
    problems: Vec<(usize, String)>,
    bytes: u64,
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ReadJob {
    /// Reads the files with `jobs` threads, each taking the next file of the list when done
    /// with one: at most `jobs` files are in memory at once, and a big file does not hold up
    /// the others. Each thread has its own clusterer; merging them is independent of which
    /// thread read which file (see [`Clusterer::merge`]), so the result is the one-thread
    /// result.
    fn run(self, jobs: usize, empty: &Clusterer) -> ReadResult {
        let done = AtomicU64::new(0);
        if let Some(p) = &self.progress {
            p(0, self.total);
        }
        let parts: Vec<(Clusterer, WorkerNotes)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..jobs.max(1))
                .map(|_| {
                    let mut clusterer = empty.empty_like();
                    let (done, job) = (&done, &self);
                    scope.spawn(move || {
                        let mut notes = WorkerNotes::default();
                        while let Some((i, path)) = job.next_file(done) {
                            notes.tried += 1;
                            job.read_one(i, &path, &mut clusterer, &mut notes);
                            job.file_done(done);
                        }
                        (clusterer, notes)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        let cursor = self.cursor.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut notes = ReadNotes::default();
        let (mut problems, mut bytes, mut tried) = (Vec::new(), 0, 0);
        let mut clusterers = Vec::with_capacity(parts.len());
        for (c, n) in parts {
            clusterers.push(c);
            notes.bad_files += n.bad_files;
            bytes += n.bytes;
            tried += n.tried;
            problems.extend(n.problems);
        }
        problems.sort_by_key(|(i, _)| *i);
        notes.problems = problems.into_iter().take(MAX_LISTED_PROBLEMS).map(|(_, p)| p).collect();
        ReadResult { clusterers, notes, bytes, listed: cursor.listed as u64, tried, failed: cursor.failed }
    }

    /// The next file that may hold records of the window, with its place in the sorted list;
    /// None when the walk is over, failed, or the read was dropped.
    fn next_file(&self, done: &AtomicU64) -> Option<(usize, PathBuf)> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if cursor.failed.is_some() || self.stop.load(Ordering::Relaxed) {
                return None;
            }
            match cursor.walk.next(&self.reader)? {
                Err(e) => cursor.failed = Some(e),
                Ok(path) => {
                    let i = cursor.listed;
                    cursor.listed += 1;
                    if may_overlap(&path, self.window) {
                        return Some((i, path));
                    }
                    self.file_done(done);
                }
            }
        }
    }

    fn file_done(&self, done: &AtomicU64) {
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(p) = &self.progress {
            p(d, self.total.max(d));
        }
    }

    fn read_one(&self, i: usize, path: &Path, clusterer: &mut Clusterer, notes: &mut WorkerNotes) {
        let result = self.reader.read(path).and_then(|b| {
            notes.bytes += b.len() as u64;
            ingest_file(&b, clusterer)
        });
        if let Err(problem) = result {
            notes.bad_files += 1;
            // A worker's files come in list order, so its first ones are all that can be listed.
            if notes.problems.len() < MAX_LISTED_PROBLEMS {
                notes.problems.push((i, format!("{}: {problem}", shown_path(path, &self.root).display())));
            }
            tracing::warn!(file = %path.display(), %problem, "a file could not be read, or not whole");
        }
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

    /// The record files and directories directly in the directory `rel`, relative to the
    /// root; links and other special files are passed over.
    fn children(&self, rel: &Path) -> std::io::Result<Vec<(PathBuf, bool)>> {
        use rustix::fs::FileType;
        let mut out = Vec::new();
        let fd = self.open_rel(rel)?;
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = std::ffi::OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let path = rel.join(name);
            let kind = match entry.file_type() {
                FileType::Unknown => rustix::fs::FileType::from_raw_mode(
                    rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
                ),
                known => known,
            };
            match kind {
                FileType::Directory => out.push((path, true)),
                FileType::RegularFile if is_record_file(&path) => out.push((path, false)),
                _ => {}
            }
        }
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

    fn children(&self, rel: &Path) -> std::io::Result<Vec<(PathBuf, bool)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.checked(rel)?)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = rel.join(entry.file_name());
            if kind.is_dir() {
                out.push((path, true));
            } else if kind.is_file() && is_record_file(&path) {
                out.push((path, false));
            }
        }
        Ok(out)
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

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn read_gz(bytes: &[u8]) -> Result<Vec<u8>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json.gz");
        std::fs::write(&path, bytes).unwrap();
        read_file(&path)
    }

    /// libdeflate takes only whole single-member files; everything else reads as the
    /// streaming decoder reads it: every member, or what comes before a cut, with the problem.
    #[test]
    fn gzip_files_read_whole_or_as_far_as_they_go() {
        let a = br#"{"Records":[{"eventTime":"2023-07-10T12:00:00Z"}]}"#.repeat(500);
        let one = gzip(&a);
        assert_eq!(inflate_whole(&one).as_deref(), Some(&a[..]));
        assert_eq!(read_gz(&one).unwrap(), a);

        let mut two = one.clone();
        two.extend_from_slice(&gzip(b"\n{\"b\":1}"));
        assert_eq!(inflate_whole(&two), None, "a second member is seen");
        let mut both = a.clone();
        both.extend_from_slice(b"\n{\"b\":1}");
        assert_eq!(read_gz(&two).unwrap(), both);

        let mut trailing = one.clone();
        trailing.extend_from_slice(b"garbage!");
        assert_eq!(inflate_whole(&trailing), None, "bytes after the member are seen");
        assert!(read_gz(&trailing).unwrap_err().starts_with("bad gzip"));

        assert_eq!(inflate_whole(&one[..one.len() / 2]), None);
        assert!(read_gz(&one[..one.len() / 2]).unwrap_err().starts_with("bad gzip"));
        assert_eq!(read_gz(&gzip(b"")).unwrap(), b"");
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
            assert_eq!(ingest_bytes(bytes.as_bytes(), &mut c), Split { records: n, problem: None });
            assert_eq!(c.stats().error_records, n);
        }
        // (file, records handed over, malformed among them, is the file reported)
        for (bad, n, malformed, reported) in [
            ("not json", 0, 0, true),
            ("{\"Records\": 5}", 1, 1, false),
            ("[1, 2", 2, 2, true),
            ("{\"Records\": [{}]", 1, 1, true),
        ] {
            let mut c = Clusterer::new(ClustererConfig { track_keys: true, ..ClustererConfig::default() });
            let split = ingest_bytes(bad.as_bytes(), &mut c);
            assert_eq!(
                (split.records, c.stats().malformed_records, split.problem.is_some()),
                (n, malformed, reported),
                "{bad}"
            );
        }
    }
}

/// Files of the shapes real deliveries and real tools produce, built from real records.
#[cfg(test)]
mod real_shapes {
    use super::*;
    use crate::engine::{Analysis, ClustererConfig, Outcome};
    use serde_json::{Value, json};

    /// The records of one invictus-ir delivery file, in order.
    fn invictus_file(name: &str) -> Vec<Value> {
        let dir = crate::engine::test_records_dir().join("invictus-ir/CloudTrail");
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        doc["Records"].as_array().unwrap().clone()
    }

    /// 10 error records and 10 others from the invictus-ir hour, in their order there.
    fn twenty_records() -> Vec<Value> {
        let mut all = Vec::new();
        for name in [
            "218007301253_CloudTrail_us-east-1_20230710T1150Z_1vnLavRRp0ek1mP4.json",
            "218007301253_CloudTrail_us-east-1_20230710T1200Z_iLj9fb7yyUG9X4Bf.json",
            "218007301253_CloudTrail_us-east-1_20230710T1205Z_1dM7GQM67kudSyGD.json",
            "218007301253_CloudTrail_us-east-1_20230710T1230Z_9JM8uKEITHqwJKXr.json",
        ] {
            all.extend(invictus_file(name));
        }
        let (errors, others): (Vec<Value>, Vec<Value>) = all.into_iter().partition(|r| r.get("errorCode").is_some());
        assert!(errors.len() >= 10 && others.len() >= 10, "{} errors, {} others", errors.len(), others.len());
        errors.into_iter().take(10).chain(others.into_iter().take(10)).collect()
    }

    fn read(bytes: &[u8]) -> (Split, Analysis) {
        let mut c = Clusterer::new(ClustererConfig { track_keys: true, ..ClustererConfig::default() });
        let split = ingest_bytes(bytes, &mut c);
        (split, c.finish())
    }

    /// CloudTrail's one line of `{"Records":[…]}`, with one invalid byte in one error
    /// record's errorMessage: that record is read lossily and counted as a warning, and the
    /// 19 others are read as they are.
    #[test]
    fn one_bad_byte_costs_nothing_else() {
        let records = twenty_records();
        let mut file = serde_json::to_vec(&json!({ "Records": records })).unwrap();
        let message = records[3]["errorMessage"].as_str().expect("an error record with a message");
        let at = memchr::memmem::find(&file, message.as_bytes()).unwrap() + message.len() / 2;
        file[at] = 0xff;
        assert!(std::str::from_utf8(&file).is_err());
        let (split, a) = read(&file);
        assert_eq!(split, Split { records: 20, problem: None });
        assert_eq!(a.stats.error_records, 10);
        assert_eq!(a.stats.malformed_records, 0);
        assert_eq!(a.stats.warned_records, 1);
        assert_eq!(a.repairs, vec![("invalid UTF-8 or escape".to_string(), 1)]);
        assert_eq!(a.clusters.iter().map(|c| c.count).sum::<u64>(), 10);
    }

    /// One real error record saved with `indent=2` is one record and one error, not 60-odd
    /// malformed lines; several such records in one file, or a pretty `{"Records": [...]}`,
    /// are read the same way. JSON lines stay JSON lines.
    #[test]
    fn pretty_printed_files_are_documents() {
        let records = twenty_records();
        let error = &records[0];
        let pretty = serde_json::to_string_pretty(error).unwrap();
        assert!(pretty.lines().count() > 20);
        let (split, a) = read(pretty.as_bytes());
        assert_eq!((split.records, a.stats.error_records, a.stats.malformed_records), (1, 1, 0));

        let several = records.iter().map(|r| serde_json::to_string_pretty(r).unwrap()).collect::<Vec<_>>().join("\n");
        let (split, a) = read(several.as_bytes());
        assert_eq!((split.records, a.stats.error_records, a.stats.malformed_records), (20, 10, 0));

        let delivery = serde_json::to_string_pretty(&json!({ "Records": records })).unwrap();
        let (split, a) = read(delivery.as_bytes());
        assert_eq!((split.records, a.stats.error_records, a.stats.malformed_records), (20, 10, 0));

        let lines = records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n");
        let (split, a) = read(lines.as_bytes());
        assert_eq!((split.records, a.stats.error_records, a.stats.malformed_records), (20, 10, 0));
    }

    /// Wrong types and bad bytes in fields the engine can do without keep their error record.
    #[test]
    fn odd_fields_keep_their_error_record() {
        let records = twenty_records();
        let mut errors: Vec<Value> = records.into_iter().filter(|r| r.get("errorCode").is_some()).take(3).collect();
        errors[0]["userIdentity"]["accessKeyId"] = json!(12345);
        errors[1]["errorMessage"] = json!(["a", "b"]);
        errors[2]["userAgent"] = json!("MARK");
        let mut file = Vec::new();
        for e in &errors {
            file.extend_from_slice(e.to_string().as_bytes());
            file.push(b'\n');
        }
        let at = memchr::memmem::find(&file, b"MARK").unwrap();
        file[at + 1] = 0xc3; // a lead byte with no continuation
        let (split, a) = read(&file);
        assert_eq!(split.records, 3);
        assert_eq!((a.stats.error_records, a.stats.malformed_records, a.stats.warned_records), (3, 0, 3));
        assert_eq!(
            a.repairs,
            vec![
                ("errorMessage".to_string(), 1),
                ("invalid UTF-8 or escape".to_string(), 1),
                ("userIdentity.accessKeyId".to_string(), 1)
            ]
        );
        assert!(a.clusters.iter().any(|c| c.sample_message == r#"["a","b"]"#));
        assert!(a.keys.iter().any(|k| k.access_key_id == "12345"));
    }

    /// An Insights file as CloudTrail writes them under `CloudTrail-Insight/` (pretty-printed
    /// here): a start and an end event, neither malformed nor an error.
    #[test]
    fn insights_events_are_counted_apart() {
        let insight = |state: &str, time: &str, id: &str| {
            json!({"eventVersion": "1.08", "eventTime": time, "awsRegion": "us-east-1", "eventID": id,
                "eventType": "AwsCloudTrailInsight", "recipientAccountId": "123456789012",
                "sharedEventID": "5b2c4a1e-1111-4b7e-9d0f-2a6c7e3f9a10",
                "insightDetails": {"state": state, "eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey",
                    "insightType": "ApiCallRateInsight",
                    "insightContext": {"statistics": {"baseline": {"average": 0.0208}, "insight": {"average": 12.0}}}},
                "eventCategory": "Insight"})
        };
        let file = serde_json::to_string_pretty(&json!({"Records": [
            insight("Start", "2023-07-10T12:05:00Z", "8d0d2f2e-2222-4c36-8a51-0f5cf1f2b7a1"),
            insight("End", "2023-07-10T12:09:00Z", "8d0d2f2e-3333-4c36-8a51-0f5cf1f2b7a1"),
        ]}))
        .unwrap();
        let (split, a) = read(file.as_bytes());
        assert_eq!(split.records, 2);
        assert_eq!((a.stats.insight_events, a.stats.malformed_records, a.stats.error_records), (2, 0, 0));
        let states: Vec<&str> = a.insights.iter().map(|i| i.state.as_str()).collect();
        assert_eq!(states, ["Start", "End"]);
        assert_eq!(a.insights[0].insight_average, Some(12.0));
        // Reading errors only (CloudWatch Logs' records are selected by errorCode), the
        // prefilter passes error-rate findings, which name an errorCode, and no others.
        let mut c = Clusterer::new(ClustererConfig::default());
        let mut errors = insight("Start", "2023-07-10T12:05:00Z", "x");
        errors["insightDetails"]["insightType"] = json!("ApiErrorRateInsight");
        errors["insightDetails"]["errorCode"] = json!("AccessDenied");
        assert_eq!(c.ingest(errors.to_string().as_bytes()), Outcome::Insight);
        assert_eq!(c.ingest(insight("Start", "2023-07-10T12:05:00Z", "y").to_string().as_bytes()), Outcome::NotError);
        assert_eq!(c.stats().insight_events, 1);
    }

    /// Amazon Managed Grafana records success with `"errorCode": "200"`; a real failure of
    /// the same API is still an error.
    #[test]
    fn success_codes_are_not_errors() {
        let grafana = |code: &str| {
            json!({"eventVersion": "1.08", "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/GrafanaAdmin/alice"},
                "eventTime": "2023-07-10T12:00:00Z", "eventSource": "grafana.amazonaws.com", "eventName": "ListWorkspaces",
                "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.10", "userAgent": "aws-cli/2.13.0",
                "errorCode": code, "requestParameters": null, "responseElements": null,
                "eventID": format!("e-{code}"), "eventType": "AwsApiCall", "recipientAccountId": "123456789012"})
            .to_string()
        };
        let file = [grafana("200"), grafana("200"), grafana("AccessDeniedException")].join("\n");
        let (_, a) = read(file.as_bytes());
        assert_eq!(a.stats.error_records, 1);
        assert_eq!(a.clusters.len(), 1);
        assert_eq!(a.clusters[0].key.error_code, "AccessDeniedException");
    }

    /// Failed console sign-ins of two users, as CloudTrail records them (no ARN): two
    /// targets, not one `IAMUser`.
    #[test]
    fn failed_sign_ins_keep_their_target() {
        let failure = |user: &str, id: &str| {
            json!({"eventVersion": "1.08", "userIdentity": {"type": "IAMUser", "principalId": id, "accountId": "111122223333",
                "accessKeyId": "", "userName": user}, "eventTime": "2023-07-10T12:00:00Z",
                "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
                "sourceIPAddress": "198.51.100.7", "userAgent": "Mozilla/5.0", "errorMessage": "Failed authentication",
                "requestParameters": null, "responseElements": {"ConsoleLogin": "Failure"},
                "additionalEventData": {"MFAUsed": "No"}, "eventID": format!("e-{user}"), "eventType": "AwsConsoleSignIn",
                "recipientAccountId": "111122223333"})
            .to_string()
        };
        let file = [
            failure("alice", "AIDAEXAMPLEALICE00001"),
            failure("alice", "AIDAEXAMPLEALICE00001"),
            failure("bob", "AIDAEXAMPLEBOB000001"),
        ]
        .join("\n");
        let (_, a) = read(file.as_bytes());
        assert_eq!(a.clusters.len(), 1);
        let principals: Vec<(&str, u64)> =
            a.clusters[0].top_principals.iter().map(|p| (p.value.as_str(), p.count)).collect();
        assert_eq!(principals, [("IAMUser userName=alice", 2), ("IAMUser userName=bob", 1)]);
    }
}
