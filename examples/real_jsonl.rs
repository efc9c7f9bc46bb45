//! Writes a JSON-lines file of N real CloudTrail records for the engine benchmarks: every record
//! of the public sample sets (`../shared/data/cloudtrail`, or `CLOUDTRAIL_DATA_DIR`), in a fixed
//! order, repeated until N records are written.
//!
//! ```sh
//! cargo run --release --example real_jsonl -- OUT.jsonl [N]    # N defaults to 300000
//! ```
//!
//! The records keep their bytes: each is cut out of its file by the engine's own splitter and
//! only the whitespace between JSON tokens is dropped (the stratus-red-team sets are
//! pretty-printed), so one record is one line, and its field order, escapes and number
//! spellings are the source's. The panther-analysis fixtures keep their odd values.

use std::io::Write;
use std::path::{Path, PathBuf};

use cloudtrail_inspector::engine::split_records;
use cloudtrail_inspector::synth::sample_data_dir;

/// The sets and their files, in the order records are written.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for set in ["invictus-ir/CloudTrail", "stratus-red-team"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join(set))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(set).display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        out.extend(paths);
    }
    out.push(dir.join("panther-analysis/events.jsonl"));
    out
}

/// `raw` without whitespace outside strings: one line, every other byte as it was.
fn compact(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let (mut in_str, mut escaped) = (false, false);
    for &c in raw {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            out.push(c);
            in_str = c == b'"';
        }
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out_path = args.next().expect("usage: real_jsonl OUT.jsonl [N]");
    let n: u64 = args.next().map_or(300_000, |v| v.parse().expect("N is a number"));
    let dir = sample_data_dir().expect("the sample sets: ../shared/data/cloudtrail or CLOUDTRAIL_DATA_DIR");

    let mut records: Vec<Vec<u8>> = Vec::new();
    for path in files(&dir) {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let split = split_records(&bytes, |raw| records.push(compact(raw)));
        assert!(split.problem.is_none(), "{}: {:?}", path.display(), split.problem);
    }
    assert!(!records.is_empty(), "no records under {}", dir.display());

    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out_path).expect("create output"));
    let mut bytes = 0u64;
    for raw in records.iter().cycle().take(usize::try_from(n).expect("N fits in memory")) {
        w.write_all(raw).expect("write");
        w.write_all(b"\n").expect("write");
        bytes += raw.len() as u64 + 1;
    }
    w.flush().expect("flush");
    println!(
        "real records={n} distinct={} bytes={bytes} avg_record_bytes={:.0}",
        records.len(),
        bytes as f64 / n.max(1) as f64
    );
}
