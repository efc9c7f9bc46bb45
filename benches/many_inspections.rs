//! 200 inspections due in the same hour, started by the service's own scheduler, against
//! realistic fake CloudWatch Logs accounts (one fake per account, each with AWS's quota of
//! 5 FilterLogEvents calls/s and 50–150 ms per call). One line:
//!
//! `many_inspections inspections=… accounts=… wall_s=… runs=… runs_succeeded=… last_queued_s=…
//! start_spread_s=… max_running=… throttled=… max_filter_calls_per_s=… peak_rss_mb=…`
//!
//! `wall_s`: from the slot to the end of the last run. `last_queued_s`: when the scheduler
//! queued the last run, after the slot. `start_spread_s`: first to last run start.
//!
//! All inspections are on one hourly schedule whose next slot is a few seconds away, with the
//! scheduler's default spread (60 s): each inspection starts at its own offset in the minute
//! after the slot, and at most `RUN_CONCURRENCY` (4) runs go at once. Each reads its own log
//! group holding an hour of generated CloudTrail (10,000 records, about 1,000 errors) with
//! `filter_log_events`, plus the access-key query, and stores the run in SQLite (or in the
//! Postgres database named by `MANY_DATABASE_URL`). Inspections of one account share its quota.
//!
//! `peak_rss_mb` is the process's peak resident memory while the runs went, less what it held
//! before they started (the fakes' records): the service's own cost, plus the fakes' answers
//! in flight. Knobs: `MANY_INSPECTIONS` (200), `MANY_ACCOUNTS` (10), `MANY_RECORDS` (10,000 per
//! log group), `MANY_DATABASE_URL`.

#[path = "../tests/it/common/fake_cwl/mod.rs"]
mod fake_cwl;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Timelike, Utc};
use cloudtrail_inspector::crypto::SecretBox;
use cloudtrail_inspector::model::inspection::{InspectionDraft, NewInspection};
use cloudtrail_inspector::model::run::RunStatus;
use cloudtrail_inspector::runner::Runner;
use cloudtrail_inspector::runner::RunnerSettings;
use cloudtrail_inspector::scheduler::ScheduleSettings;
use cloudtrail_inspector::scheduler::Scheduler;
use cloudtrail_inspector::source::Sources;
use cloudtrail_inspector::source::cloudwatch::CloudWatchFactory;
use cloudtrail_inspector::store::{self, RunFilter};
use cloudtrail_inspector::synth::{Synth, SynthConfig};
use fake_cwl::{FakeConfig, FakeCwl};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn status_kb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n_insp = env_num("MANY_INSPECTIONS", 200);
    let n_acct = env_num("MANY_ACCOUNTS", 10).max(1);
    let per_group = env_num("MANY_RECORDS", 10_000);

    // An hour of CloudTrail per log group, ending at the runs' default window end
    // (now − 10 min delivery delay), a little inside it on both sides.
    let now = Utc::now();
    let hour_start = now - TimeDelta::minutes(69);
    let mut fakes = Vec::new();
    for _ in 0..n_acct {
        fakes.push(
            FakeCwl::start_with(FakeConfig {
                latency: Duration::from_millis(50),
                latency_max: Some(Duration::from_millis(150)),
                filter_rps: Some(5.0),
                query_duration: Duration::from_secs(2),
                query_scan_bytes_per_sec: Some(1e9),
                ..FakeConfig::default()
            })
            .await,
        );
    }
    let t = Instant::now();
    let mut buf = Vec::new();
    for i in 0..n_insp {
        let rps = per_group as f64 / (58.0 * 60.0);
        let mut synth = Synth::new(SynthConfig {
            seed: i as u64 + 1,
            start: hour_start,
            records_per_second: rps,
            ..SynthConfig::default()
        });
        let start_ms = hour_start.timestamp_millis();
        let events: Vec<(i64, String)> = (0..per_group)
            .map(|k| {
                buf.clear();
                synth.next_into(&mut buf);
                (start_ms + (k as f64 * 1000.0 / rps) as i64, String::from_utf8(buf.clone()).expect("UTF-8"))
            })
            .collect();
        fakes[i % n_acct].put_events(&format!("trail-{i:03}"), "CloudTrail", events);
    }
    eprintln!("# loaded {} records in {:.1} s", n_insp * per_group, t.elapsed().as_secs_f64());

    let dir = tempfile::tempdir()?;
    let url = std::env::var("MANY_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("many.db").display()));
    let db = store::connect(&url, 8, Arc::new(SecretBox::new(&[7; 32], &[]))).await?;
    db.migrate().await?;
    let settings = RunnerSettings::default();
    let sources = Sources {
        cloudwatch: CloudWatchFactory::new(settings.cloudwatch.clone()),
        s3: cloudtrail_inspector::source::s3::S3Factory::new(settings.s3.clone(), false),
        file_progress: None,
        files: cloudtrail_inspector::source::files::FilesAccess::Nowhere,
        file_jobs: None,
    };
    let runner = Runner::new(db.clone(), Arc::new(sources), settings.clone());

    // One hourly slot, a few seconds ahead: at minute M of every hour.
    let slot = (Utc::now() + TimeDelta::seconds(70)).duration_trunc(TimeDelta::minutes(1))?;
    let schedule = format!("{} * * * *", slot.minute());
    // Changed after the previous slot (an hour before), so only the coming one is due.
    let created = slot - TimeDelta::minutes(30);
    let mut ids = Vec::new();
    for i in 0..n_insp {
        let new: NewInspection = serde_json::from_value(serde_json::json!({
            "name": format!("account-{:02}-trail-{i:03}", i % n_acct),
            "log_groups": [format!("trail-{i:03}")],
            "schedule": schedule,
            "baseline_days": 0,
            "aws": {
                "region": "us-east-1",
                "account_id": format!("{:012}", 100_000_000_000u64 + (i % n_acct) as u64),
                "access_key_id": "AKIABENCHBENCHBENCH1",
                "secret_access_key": "bench-secret",
                "endpoint_url": fakes[i % n_acct].endpoint(),
            },
        }))?;
        let draft = InspectionDraft::from_new(new).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ids.push(db.create_inspection(uuid::Uuid::now_v7(), &draft, created).await?.id);
    }

    let scheduler =
        Scheduler::new(db.clone(), runner.clone(), ScheduleSettings { enabled: true, spread: Duration::from_secs(60) });
    let _ticks = scheduler.spawn();
    let wait = (slot - Utc::now()).to_std().unwrap_or_default();
    eprintln!("# slot at {slot}, {:.0} s from now", wait.as_secs_f64());
    tokio::time::sleep(wait).await;

    // Peak memory from here on: the fakes' records are already in.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kb("VmRSS:");
    let t = Instant::now();
    let filter = RunFilter::default();
    let filter = RunFilter { since: Some(slot - TimeDelta::seconds(1)), ..filter };
    let runs = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let runs = db.list_runs(&filter, None, (n_insp * 2) as i64).await?;
        let done = runs.iter().filter(|r| r.finished_at.is_some()).count();
        if done >= n_insp {
            break runs;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("only {done} of {n_insp} runs finished in 30 minutes");
        }
    };
    // From the slot to the last run's end.
    let last_end = runs.iter().filter_map(|r| r.finished_at).max().unwrap_or(slot);
    let wall = (last_end - slot).num_milliseconds() as f64 / 1000.0;
    let peak_mb = (status_kb("VmHWM:") - rss_before) / 1024.0;

    let succeeded = runs.iter().filter(|r| r.status == RunStatus::Succeeded).count();
    let starts: Vec<_> = runs.iter().filter_map(|r| r.started_at).collect();
    let first = starts.iter().min().copied().unwrap_or(slot);
    let last = starts.iter().max().copied().unwrap_or(slot);
    let created_last = runs.iter().map(|r| r.created_at).max().unwrap_or(slot);
    // Most runs in progress at once, from their start and finish times.
    let mut edges: Vec<(chrono::DateTime<Utc>, i32)> = Vec::new();
    for r in &runs {
        if let (Some(s), Some(f)) = (r.started_at, r.finished_at) {
            edges.push((s, 1));
            edges.push((f, -1));
        }
    }
    edges.sort();
    let (mut running, mut max_running) = (0, 0);
    for (_, d) in edges {
        running += d;
        max_running = max_running.max(running);
    }
    let mut durations: Vec<f64> =
        runs.iter().filter_map(|r| Some((r.finished_at? - r.started_at?).num_milliseconds() as f64 / 1000.0)).collect();
    durations.sort_by(f64::total_cmp);
    let throttled: usize = fakes.iter().map(FakeCwl::throttled_count).sum();
    let max_rate = fakes.iter().map(|f| f.max_calls_per_second("FilterLogEvents")).max().unwrap_or(0);
    let calls: usize = fakes.iter().map(|f| f.calls().len()).sum();
    let api_calls: i64 = runs.iter().map(|r| r.aws_api_calls).sum();
    println!(
        "many_inspections inspections={n_insp} accounts={n_acct} backend={} wall_s={wall:.1} runs={} runs_succeeded={succeeded} \
         last_queued_s={:.0} start_spread_s={:.0} max_running={max_running} run_p50_s={:.1} run_max_s={:.1} \
         aws_calls={calls} run_aws_calls={api_calls} throttled={throttled} max_filter_calls_per_s={max_rate} \
         error_records={} peak_rss_mb={peak_mb:.0}",
        db.backend(),
        runs.len(),
        (created_last - slot).num_milliseconds() as f64 / 1000.0,
        (last - first).num_milliseconds() as f64 / 1000.0,
        durations.get(durations.len() / 2).copied().unwrap_or(0.0),
        durations.last().copied().unwrap_or(0.0),
        runs.iter().map(|r| r.error_records).sum::<i64>(),
    );
    let _ = ids;
    Ok(())
}
