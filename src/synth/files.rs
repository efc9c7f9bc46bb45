//! Writing generated records to disk: as CloudTrail delivers them to S3, or as JSON lines.
//!
//! Both stream: at most one open batch per (account, region) is held in memory, so 10^7
//! records take no more memory than 10^4.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{ALNUM, SplitMix64, Synth, civil_from_days, random_string};

/// What a write produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesSummary {
    pub files: u64,
    pub records: u64,
    /// Uncompressed JSON bytes of the records (without separators).
    pub record_bytes: u64,
    /// Bytes of the files written (gzipped).
    pub file_bytes: u64,
}

/// CloudTrail writes a file about every five minutes per account and region.
const DELIVERY_SECS: i64 = 300;

struct Batch {
    /// Start of the five-minute delivery window.
    window: i64,
    /// Records joined by commas.
    body: Vec<u8>,
    records: usize,
}

/// Writes `records` records from `synth` under `dir` as
/// `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<random>.json.gz`,
/// each file `{"Records":[…]}` with at most `per_file` records of one five-minute window.
/// The random part of the names comes from the generator's seed, so reruns write the same
/// tree.
pub fn write_cloudtrail_files(
    dir: &Path,
    synth: &mut Synth,
    records: u64,
    per_file: usize,
) -> io::Result<FilesSummary> {
    let mut names = SplitMix64::new(synth.config().seed ^ 0x5EED_F11E);
    let layout = Layout { dir, org: None, delivery_secs: DELIVERY_SECS, per_file: per_file.max(1) };
    write_batched(&layout, synth, records, &mut names)
}

/// Where and how batches become files.
struct Layout<'a> {
    dir: &'a Path,
    /// An organization trail's `o-…` level under `AWSLogs/`.
    org: Option<&'a str>,
    delivery_secs: i64,
    per_file: usize,
}

fn write_batched(layout: &Layout, synth: &mut Synth, records: u64, names: &mut SplitMix64) -> io::Result<FilesSummary> {
    let accounts: Vec<String> = synth.account_ids().into_iter().map(str::to_owned).collect();
    let regions = synth.regions();
    let mut open: HashMap<(usize, usize), Batch> = HashMap::new();
    let mut summary = FilesSummary::default();
    let mut rec = Vec::with_capacity(4096);
    let mut flush = |key: (usize, usize), b: Batch, summary: &mut FilesSummary| -> io::Result<()> {
        let (acct, region) = (&accounts[key.0], regions[key.1]);
        let delivered = b.window + layout.delivery_secs;
        let path = s3_path(layout.dir, layout.org, acct, region, delivered, &random_string(names, ALNUM, 16));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut gz = GzEncoder::new(Counted::new(BufWriter::new(File::create(&path)?)), Compression::fast());
        gz.write_all(br#"{"Records":["#)?;
        gz.write_all(&b.body)?;
        gz.write_all(b"]}")?;
        let mut out = gz.finish()?;
        out.flush()?;
        summary.files += 1;
        summary.file_bytes += out.bytes;
        Ok(())
    };
    for _ in 0..records {
        rec.clear();
        let meta = synth.next_into(&mut rec);
        summary.records += 1;
        summary.record_bytes += rec.len() as u64;
        let key = (meta.account, meta.region);
        let window = meta.time - meta.time.rem_euclid(layout.delivery_secs);
        if let Some(b) = open.get(&key) {
            if b.window != window || b.records >= layout.per_file {
                let b = open.remove(&key).expect("batch just seen");
                flush(key, b, &mut summary)?;
            }
        }
        let b = open.entry(key).or_insert_with(|| Batch { window, body: Vec::new(), records: 0 });
        if b.records > 0 {
            b.body.push(b',');
        }
        b.body.extend_from_slice(&rec);
        b.records += 1;
    }
    let mut rest: Vec<_> = open.into_iter().collect();
    rest.sort_by_key(|(k, b)| (b.window, *k));
    for (key, b) in rest {
        flush(key, b, &mut summary)?;
    }
    Ok(summary)
}

/// Counts the bytes that reach the disk.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W> Counted<W> {
    fn new(inner: W) -> Self {
        Counted { inner, bytes: 0 }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An organization trail over whole days, as CloudTrail delivers it to the management
/// account's bucket.
#[derive(Debug, Clone)]
pub struct OrgTrail {
    /// The organization id, `o-` and ten lower-case letters or digits.
    pub org: String,
    /// The first day, in days since 1970-01-01.
    pub first_day: i64,
    pub days: u32,
    pub records_per_day: u64,
    /// Seconds of events per file. CloudTrail delivers about every five minutes; longer
    /// windows keep a big generated tree to fewer, larger files.
    pub delivery_secs: i64,
    pub per_file: usize,
    /// Threads writing, each a day at a time.
    pub jobs: usize,
}

/// Writes `trail` under `dir` as
/// `AWSLogs/<org>/<account>/CloudTrail/<region>/YYYY/MM/DD/…json.gz`, days in parallel.
///
/// Every day starts from `base` (its accounts and principals, so they are the same all year)
/// with a stream of its own derived from the seed and the day: the tree is the same whatever
/// the number of jobs, and a day can be regenerated alone. `progress` is called with the days
/// done.
pub fn write_org_trail(
    dir: &Path,
    base: &Synth,
    trail: &OrgTrail,
    progress: &(dyn Fn(u64, &FilesSummary) + Sync),
) -> io::Result<FilesSummary> {
    let next = std::sync::atomic::AtomicU32::new(0);
    let total = std::sync::Mutex::new(FilesSummary::default());
    let done = std::sync::atomic::AtomicU64::new(0);
    let layout = Layout {
        dir,
        org: Some(&trail.org),
        delivery_secs: trail.delivery_secs.clamp(60, 86_400),
        per_file: trail.per_file.max(1),
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..trail.jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    loop {
                        let d = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if d >= trail.days {
                            return Ok(());
                        }
                        let day = trail.first_day + i64::from(d);
                        let mut synth = base.clone();
                        synth.restart(day as u64, day * 86_400_000, trail.records_per_day as f64 / 86_400.0);
                        let mut names =
                            SplitMix64::new(base.config().seed ^ 0x5EED_F11E ^ (day as u64).rotate_left(32));
                        let s = write_batched(&layout, &mut synth, trail.records_per_day, &mut names)?;
                        let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
                        t.files += s.files;
                        t.records += s.records;
                        t.record_bytes += s.record_bytes;
                        t.file_bytes += s.file_bytes;
                        progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, &t);
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    Ok(total.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn s3_path(dir: &Path, org: Option<&str>, acct: &str, region: &str, delivered: i64, random: &str) -> PathBuf {
    let (y, m, d) = civil_from_days(delivered.div_euclid(86_400));
    let secs = delivered.rem_euclid(86_400);
    let (hh, mm) = (secs / 3600, secs / 60 % 60);
    let logs = dir.join("AWSLogs");
    match org {
        Some(org) => logs.join(org),
        None => logs,
    }
    .join(acct)
    .join("CloudTrail")
    .join(region)
    .join(format!("{y:04}"))
    .join(format!("{m:02}"))
    .join(format!("{d:02}"))
    .join(format!("{acct}_CloudTrail_{region}_{y:04}{m:02}{d:02}T{hh:02}{mm:02}Z_{random}.json.gz"))
}

/// Writes `records` records, one JSON object a line, to `path`; returns the bytes written.
pub fn write_jsonl(path: &Path, synth: &mut Synth, records: u64) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut rec = Vec::with_capacity(4096);
    let mut bytes = 0;
    for _ in 0..records {
        rec.clear();
        synth.next_into(&mut rec);
        rec.push(b'\n');
        w.write_all(&rec)?;
        bytes += rec.len() as u64;
    }
    w.flush()?;
    Ok(bytes)
}
