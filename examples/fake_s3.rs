//! The tests' fake S3 server, serving an organization trail built from the real CloudTrail
//! records in `tests/data/cloudtrail`, for `scripts/bench-s3.sh`:
//!
//!     cargo run --release --example fake_s3 -- <objects> [--records-per-object 100] [--write-dir DIR]
//!
//! Prints one line, `endpoint=… bucket=… prefix=… objects=… records=… bytes=… raw_bytes=…`,
//! then serves until stdin closes. `--write-dir` also writes the same files, in the same
//! layout, under DIR, so a scan of the tree on disk can be timed beside the scan of S3.

/// The tests' reading of the real records; the example uses only part of it.
#[path = "../tests/it/common/data.rs"]
#[allow(dead_code)]
mod data;
#[path = "../tests/it/common/fake_s3.rs"]
mod fake_s3;

use std::io::Read;
use std::path::PathBuf;

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::Value;

const BUCKET: &str = "bench-trail-bucket";
const PREFIX: &str = "org-trail";
const ORG: &str = "o-benchorg01";
const ACCOUNTS: [&str; 2] = ["111111111111", "222222222222"];
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let objects: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let per_object: usize = flag("--records-per-object").and_then(|v| v.parse().ok()).unwrap_or(100);
    let write_dir = flag("--write-dir").map(PathBuf::from);

    let records = data::invictus();
    let fake = fake_s3::FakeS3::start().await;
    let now = Utc::now().duration_trunc(TimeDelta::seconds(1))?;
    let (mut total_records, mut bytes, mut raw_bytes) = (0usize, 0usize, 0usize);
    for n in 0..objects {
        let (account, region) = (ACCOUNTS[n % 2], REGIONS[(n / 2) % 2]);
        let start = (n * per_object) % records.len();
        let chunk: Vec<Value> = (0..per_object).map(|i| records[(start + i) % records.len()].clone()).collect();
        // Spread over the last 30 days, as a month of deliveries.
        let at = now - TimeDelta::seconds(((n as i64) * 30 * 86_400) / objects.max(1) as i64) - TimeDelta::hours(1);
        let key = fake_s3::trail_key(PREFIX, Some(ORG), account, region, at, n as u32);
        let body = fake_s3::gzip_records(&chunk);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut raw)?;
        raw_bytes += raw.len();
        bytes += body.len();
        total_records += chunk.len();
        if let Some(dir) = &write_dir {
            let path = dir.join(&key);
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(&path, &body)?;
        }
        fake.put(BUCKET, &key, body, at);
    }
    println!(
        "endpoint={} bucket={BUCKET} prefix={PREFIX} objects={objects} records={total_records} bytes={bytes} raw_bytes={raw_bytes}",
        fake.endpoint()
    );
    // Serve until whoever started us closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    Ok(())
}
