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
    let per_file = per_file.max(1);
    let accounts: Vec<String> = synth.account_ids().into_iter().map(str::to_owned).collect();
    let regions = synth.regions();
    let mut names = SplitMix64::new(synth.config().seed ^ 0x5EED_F11E);
    let mut open: HashMap<(usize, usize), Batch> = HashMap::new();
    let mut summary = FilesSummary::default();
    let mut rec = Vec::with_capacity(4096);
    let mut flush = |key: (usize, usize), b: Batch, summary: &mut FilesSummary| -> io::Result<()> {
        let (acct, region) = (&accounts[key.0], regions[key.1]);
        let path = s3_path(dir, acct, region, b.window + DELIVERY_SECS, &random_string(&mut names, ALNUM, 16));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut gz = GzEncoder::new(BufWriter::new(File::create(&path)?), Compression::fast());
        gz.write_all(br#"{"Records":["#)?;
        gz.write_all(&b.body)?;
        gz.write_all(b"]}")?;
        gz.finish()?.flush()?;
        summary.files += 1;
        Ok(())
    };
    for _ in 0..records {
        rec.clear();
        let meta = synth.next_into(&mut rec);
        summary.records += 1;
        summary.record_bytes += rec.len() as u64;
        let key = (meta.account, meta.region);
        let window = meta.time - meta.time.rem_euclid(DELIVERY_SECS);
        if let Some(b) = open.get(&key) {
            if b.window != window || b.records >= per_file {
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

fn s3_path(dir: &Path, acct: &str, region: &str, delivered: i64, random: &str) -> PathBuf {
    let (y, m, d) = civil_from_days(delivered.div_euclid(86_400));
    let secs = delivered.rem_euclid(86_400);
    let (hh, mm) = (secs / 3600, secs / 60 % 60);
    dir.join("AWSLogs")
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
