//! A real inspection run against a realistic fake CloudWatch Logs: an hour of generated
//! CloudTrail in one log group (all records stored, about one in ten an error), read through
//! the service's runner, source and store (SQLite in a temporary directory), with both
//! strategies. One line per run:
//!
//! `aws_path strategy=… error_records=… wall_s=… aws_calls=… throttled=… bytes=… quota_min_s=…`
//!
//! The fake behaves as the AWS documentation and quotas say: pages of at most 1 MB or 10,000
//! events, 50–150 ms per call, FilterLogEvents limited to 5 calls/s per account (over it:
//! `ThrottlingException`), Insights queries that run for 2 s plus 1 s per GB scanned, at most
//! 30 at once and 10,000 rows each. `quota_min_s` is the least time FilterLogEvents can take:
//! the pages the hour's error records need (packed as the fake packs them) ÷ 5 calls/s.
//!
//! Knobs (environment): `AWS_PATH_SIZES` (error records per hour, default
//! `10000,100000,1000000`), `AWS_PATH_STRATEGIES` (default
//! `filter_log_events,logs_insights`), `AWS_PATH_SCAN_GBPS` (Insights scan rate, default 1),
//! `AWS_PATH_LATENCY_MS` (per-call latency range, default `50,150`), `AWS_PATH_SEED`.

#[path = "../tests/it/common/fake_cwl/mod.rs"]
mod fake_cwl;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use cloudtrail_inspector::crypto::SecretBox;
use cloudtrail_inspector::model::inspection::{InspectionDraft, NewInspection};
use cloudtrail_inspector::model::run::{RunRequest, Trigger};
use cloudtrail_inspector::runner::Runner;
use cloudtrail_inspector::runner::RunnerSettings;
use cloudtrail_inspector::source::Sources;
use cloudtrail_inspector::source::cloudwatch::CloudWatchFactory;
use cloudtrail_inspector::source::cloudwatch::CloudWatchSettings;
use cloudtrail_inspector::store;
use cloudtrail_inspector::synth::{Synth, SynthConfig};
use fake_cwl::{FakeConfig, FakeCwl};

const GROUP: &str = "aws-cloudtrail-logs";
/// AWS's page limits and quota, as the fake applies them.
const PAGE_EVENTS: usize = 10_000;
const PAGE_BYTES: usize = 1_048_576;
const FILTER_RPS: f64 = 5.0;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name).unwrap_or_else(|_| default.to_string()).split(',').map(|s| s.trim().to_string()).collect()
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// An hour holding `errors` error records among all the others, loaded into `fake`.
/// Returns the FilterLogEvents pages those errors need at least, and all records stored.
fn load_hour(fake: &FakeCwl, errors: u64, seed: u64, start_ms: i64) -> (u64, u64, u64) {
    let ratio = SynthConfig::default().error_ratio;
    let total_guess = (errors as f64 / ratio).ceil();
    let cfg = SynthConfig {
        seed,
        start: Utc.timestamp_millis_opt(start_ms).unwrap(),
        // Spread over a little less than the hour, so the whole sample lands inside it.
        records_per_second: total_guess / 3590.0,
        ..SynthConfig::default()
    };
    let rps = cfg.records_per_second;
    let mut synth = Synth::new(cfg);
    let accounts: Vec<String> = synth.account_ids().iter().map(|s| s.to_string()).collect();
    let regions = synth.regions();
    let mut streams: BTreeMap<(usize, usize), Vec<(i64, String)>> = BTreeMap::new();
    let (mut pages, mut in_page, mut page_bytes) = (0u64, 0usize, 0usize);
    let (mut seen_errors, mut records, mut bytes) = (0u64, 0u64, 0u64);
    let mut buf = Vec::with_capacity(4096);
    while seen_errors < errors {
        buf.clear();
        let i = synth.generated();
        let meta = synth.next_into(&mut buf);
        let ms = start_ms + (i as f64 * 1000.0 / rps) as i64;
        let message = String::from_utf8(buf.clone()).expect("generated records are UTF-8");
        records += 1;
        bytes += message.len() as u64;
        if meta.is_error {
            seen_errors += 1;
            // Packed as FilterLogEvents packs them: a page ends at 10,000 events or before
            // the event that would take it past 1 MB.
            if in_page == 0 || in_page >= PAGE_EVENTS || page_bytes + message.len() > PAGE_BYTES {
                pages += 1;
                in_page = 0;
                page_bytes = 0;
            }
            in_page += 1;
            page_bytes += message.len();
        }
        streams.entry((meta.account, meta.region)).or_default().push((ms, message));
    }
    for ((a, r), events) in streams {
        fake.put_events(GROUP, &format!("{}_CloudTrail_{}", accounts[a], regions[r]), events);
    }
    (pages, records, bytes)
}

fn runner_settings() -> RunnerSettings {
    RunnerSettings {
        cloudwatch: CloudWatchSettings { filter_log_events_rps: FILTER_RPS, ..CloudWatchSettings::default() },
        ..RunnerSettings::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<u64> =
        env_list("AWS_PATH_SIZES", "10000,100000,1000000").iter().filter_map(|s| s.parse().ok()).collect();
    let strategies = env_list("AWS_PATH_STRATEGIES", "filter_log_events,logs_insights");
    let scan_gbps: f64 = std::env::var("AWS_PATH_SCAN_GBPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let seed: u64 = std::env::var("AWS_PATH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let latency: Vec<u64> = env_list("AWS_PATH_LATENCY_MS", "50,150").iter().filter_map(|s| s.parse().ok()).collect();
    let (lat_lo, lat_hi) = (latency.first().copied().unwrap_or(50), latency.last().copied().unwrap_or(150));
    let hour_start = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap();

    for &errors in &sizes {
        let fake = FakeCwl::start_with(FakeConfig {
            latency: Duration::from_millis(lat_lo),
            latency_max: Some(Duration::from_millis(lat_hi)),
            filter_rps: Some(FILTER_RPS),
            query_duration: Duration::from_secs(2),
            query_scan_bytes_per_sec: Some(scan_gbps * 1e9),
            ..FakeConfig::default()
        })
        .await;
        let t = Instant::now();
        let (pages, records, bytes) = load_hour(&fake, errors, seed, hour_start.timestamp_millis());
        eprintln!(
            "# loaded {records} records ({:.1} GB, {errors} errors, {pages} pages) in {:.1} s, rss {:.0} MB",
            bytes as f64 / 1e9,
            t.elapsed().as_secs_f64(),
            peak_rss_mb()
        );
        // Answers of finished queries are dropped as the run goes, as memory is short.
        let sweeper = {
            let fake = fake.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    fake.forget_queries_completed(Duration::from_secs(30));
                }
            })
        };
        for strategy in &strategies {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            let db = store::connect(&url, 4, Arc::new(SecretBox::new(&[7; 32], &[]))).await?;
            db.migrate().await?;
            let settings = runner_settings();
            let sources = Sources {
                cloudwatch: CloudWatchFactory::new(settings.cloudwatch.clone()),
                s3: cloudtrail_inspector::source::s3::S3Factory::new(settings.s3.clone(), false),
                file_progress: None,
                files: cloudtrail_inspector::source::files::FilesAccess::Nowhere,
                file_jobs: None,
            };
            let runner = Runner::new(db.clone(), Arc::new(sources), settings);
            let new: NewInspection = serde_json::from_value(serde_json::json!({
                "name": format!("bench-{strategy}"),
                "log_groups": [GROUP],
                "strategy": strategy,
                "baseline_days": 0,
                "aws": {
                    "region": "us-east-1",
                    "access_key_id": "AKIABENCHBENCHBENCH1",
                    "secret_access_key": "bench-secret",
                    "endpoint_url": fake.endpoint(),
                },
            }))?;
            let draft = InspectionDraft::from_new(new).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let inspection = db.create_inspection(uuid::Uuid::now_v7(), &draft, Utc::now()).await?;

            let (calls0, throttled0, bytes0) = (fake.calls().len(), fake.throttled_count(), fake.response_bytes());
            let filter0 = fake.call_count("FilterLogEvents");
            let t = Instant::now();
            let request = RunRequest {
                window_start: Some(hour_start),
                window_end: Some(hour_start + chrono::Duration::hours(1)),
                ..RunRequest::default()
            };
            let started = runner
                .trigger(inspection.id, Trigger::Api, request, None)
                .await
                .map_err(|e| anyhow::anyhow!("trigger: {e}"))?;
            let run = started.done.await?.ok_or_else(|| anyhow::anyhow!("the run vanished"))?;
            let wall = t.elapsed().as_secs_f64();
            let quota_min = pages as f64 / FILTER_RPS;
            // FilterLogEvents from its first call to the slot after its last: what the quota
            // bounds, comparable with `quota_min`. The key query comes after it in the run.
            let filter_s = fake.span_of("FilterLogEvents", calls0).as_secs_f64() + 1.0 / FILTER_RPS;
            println!(
                "aws_path strategy={strategy} error_records={errors} wall_s={wall:.1} aws_calls={} throttled={} bytes={} \
                 quota_min_s={quota_min:.1} status={} found_error_records={} filter_calls={} pages_needed={pages} \
                 filter_s={filter_s:.1} filter_ratio={:.2} records_stored={records} peak_rss_mb={:.0}",
                fake.calls().len() - calls0,
                fake.throttled_count() - throttled0,
                fake.response_bytes() - bytes0,
                run.status.as_str(),
                run.error_records,
                fake.call_count("FilterLogEvents") - filter0,
                filter_s / quota_min,
                peak_rss_mb(),
            );
            if let Some(e) = &run.error {
                eprintln!("# run note: {e}");
            }
        }
        sweeper.abort();
        fake.shutdown();
    }
    Ok(())
}
