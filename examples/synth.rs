//! Writes generated CloudTrail records to disk, for the Python baseline and for trying the
//! service on volume.
//!
//! ```text
//! cargo run --release --example synth -- jsonl OUT.jsonl RECORDS [--seed N] [--calibrate]
//! cargo run --release --example synth -- s3 OUT_DIR RECORDS [--seed N] [--per-file N] [--calibrate]
//! ```
//! `--calibrate` reweights the built-in model from the sample files (see
//! `synth::sample_data_dir`) and takes their error share.

use std::path::Path;

use cloudtrail_inspector::synth::{
    self, Synth, SynthConfig, SynthModel, calibrate_from_dir, write_cloudtrail_files, write_jsonl,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: synth (jsonl OUT.jsonl | s3 OUT_DIR) RECORDS [--seed N] [--per-file N] [--calibrate]";
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
        _ => anyhow::bail!(usage),
    }
    Ok(())
}
