//! Writes generated CloudTrail records to disk, for the Python baseline and for trying the
//! service on volume.
//!
//! ```text
//! cargo run --release --example synth -- jsonl OUT.jsonl RECORDS [--seed N] [--calibrate]
//! cargo run --release --example synth -- s3 OUT_DIR RECORDS [--seed N] [--per-file N] [--calibrate]
//! cargo run --release --example synth -- org OUT_DIR RECORDS_PER_DAY [--days 365] [--first-day 2025-01-01]
//!     [--accounts 40] [--regions 8] [--delivery-secs 3600] [--per-file N] [--jobs N] [--org o-…] [--seed N]
//! ```
//! `org` writes an organization trail, `AWSLogs/o-…/<account>/CloudTrail/<region>/YYYY/MM/DD/…`,
//! a day per thread on every core (`--jobs`, default all).
//! `--calibrate` reweights the built-in model from the sample files (see
//! `synth::sample_data_dir`) and takes their error share.

use std::path::Path;

use cloudtrail_inspector::synth::{
    self, OrgTrail, Synth, SynthConfig, SynthModel, calibrate_from_dir, write_cloudtrail_files, write_jsonl,
    write_org_trail,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: synth (jsonl OUT.jsonl | s3 OUT_DIR | org OUT_DIR) RECORDS [--seed N] [--per-file N] [--calibrate] \
                 [--days N] [--first-day YYYY-MM-DD] [--accounts N] [--regions N] [--delivery-secs N] [--jobs N] [--org o-…]";
    let (Some(kind), Some(out), Some(records)) = (args.first(), args.get(1), args.get(2)) else {
        anyhow::bail!(usage);
    };
    let records: u64 = records.parse()?;
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let mut cfg = SynthConfig::default();
    if let Some(s) = flag("--seed") {
        cfg.seed = s.parse()?;
    }
    let per_file: usize = flag("--per-file").map(|s| s.parse()).transpose()?.unwrap_or(1000);
    if kind == "org" {
        cfg.accounts = flag("--accounts").map(|s| s.parse()).transpose()?.unwrap_or(40);
        cfg.regions = flag("--regions").map(|s| s.parse()).transpose()?.unwrap_or(8);
    }
    let mut model = SynthModel::builtin();
    if args.iter().any(|a| a == "--calibrate") {
        let dir = synth::sample_data_dir().ok_or_else(|| anyhow::anyhow!("no sample data directory"))?;
        let cal = calibrate_from_dir(&dir)?;
        eprintln!("calibrated from {} records, error ratio {:.4}", cal.records, cal.error_ratio());
        cfg.error_ratio = cal.error_ratio();
        model = cal.model;
    }
    let mut s = Synth::with_model(cfg, &model);
    match kind.as_str() {
        "jsonl" => {
            let bytes = write_jsonl(Path::new(out), &mut s, records)?;
            eprintln!("wrote {records} records, {bytes} bytes, to {out}");
        }
        "s3" => {
            let sum = write_cloudtrail_files(Path::new(out), &mut s, records, per_file)?;
            eprintln!("wrote {} records in {} files under {out}", sum.records, sum.files);
        }
        "org" => {
            let first: chrono::NaiveDate = flag("--first-day")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or_else(|| chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("a valid date"));
            let trail = OrgTrail {
                org: flag("--org").cloned().unwrap_or_else(|| "o-a1b2c3d4e5".to_owned()),
                first_day: first.signed_duration_since(chrono::NaiveDate::default()).num_days(),
                days: flag("--days").map(|s| s.parse()).transpose()?.unwrap_or(365),
                records_per_day: records,
                delivery_secs: flag("--delivery-secs").map(|s| s.parse()).transpose()?.unwrap_or(3600),
                per_file: flag("--per-file").map(|s| s.parse()).transpose()?.unwrap_or(usize::MAX),
                jobs: flag("--jobs")
                    .map(|s| s.parse())
                    .transpose()?
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            };
            let started = std::time::Instant::now();
            let sum = write_org_trail(Path::new(out), &s, &trail, &|days, t| {
                eprintln!(
                    "{days}/{} days, {} files, {} records, {:.2} GB gzipped, {:.0} s",
                    trail.days,
                    t.files,
                    t.records,
                    t.file_bytes as f64 / 1e9,
                    started.elapsed().as_secs_f64()
                );
            })?;
            eprintln!(
                "wrote {} records ({:.2} GB of JSON, {:.2} GB gzipped) in {} files under {out} in {:.0} s",
                sum.records,
                sum.record_bytes as f64 / 1e9,
                sum.file_bytes as f64 / 1e9,
                sum.files,
                started.elapsed().as_secs_f64()
            );
        }
        _ => anyhow::bail!(usage),
    }
    Ok(())
}
