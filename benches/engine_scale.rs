//! Streams 10^5, 10^6 and 10^7 generated records through one `Clusterer` on one core and
//! prints one line per run that scripts can read:
//!
//! `engine records=… track_keys=… records_per_sec=… mb_per_sec=… peak_rss_mb=… clusters=… …`
//!
//! Records are generated in chunks of 10,000 and only the `ingest` calls are timed, so the
//! figures are the engine's, not the generator's. Each (size, mode) runs in a child process
//! of its own so that its peak RSS (VmHWM) is its own.
//!
//! Two rates are printed: `records_per_sec` from wall-clock time, and `cpu_records_per_sec`
//! from the time the thread was actually on a CPU (/proc/thread-self/schedstat). They agree
//! on an idle machine; on a busy one (shared build machines) the second is the per-core
//! figure and the first is what that load left of it.
//!
//! `cargo bench --bench engine_scale` runs every size with key tracking off and on.
//! Environment: `ENGINE_SCALE_SIZES` (comma-separated, default `100000,1000000,10000000`),
//! `ENGINE_SCALE_MODES` (`off`, `on` or `off,on`), `ENGINE_SCALE_SEED` (default 1), and
//! `ENGINE_SCALE_INPUT=path.jsonl` to time the whole loop (reading lines included) over a
//! file instead, as the Python baseline does; with `ENGINE_SCALE_IN_MEMORY=1` as well, the file
//! is read whole and split into lines before the clock starts and only the engine is timed,
//! as the baseline's `--in-memory` does.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudtrail_inspector::engine::{Clusterer, ClustererConfig};
use cloudtrail_inspector::synth::{Synth, SynthConfig};

const CHUNK: usize = 10_000;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Peak resident set size of this process, from /proc/self/status (Linux only).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Nanoseconds this thread has spent on a CPU (Linux); 0 where unavailable.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

struct Run {
    records: u64,
    bytes: u64,
    engine: Duration,
    /// On-CPU time of the timed part.
    cpu: Duration,
    wall: Duration,
}

fn synthetic(records: u64, seed: u64, c: &mut Clusterer) -> Run {
    let mut synth = Synth::new(SynthConfig { seed, ..Default::default() });
    let mut data = Vec::with_capacity(CHUNK * 1600);
    let mut ends = Vec::with_capacity(CHUNK);
    let (mut engine, mut cpu, mut bytes, mut left) = (Duration::ZERO, 0u64, 0u64, records);
    let wall = Instant::now();
    while left > 0 {
        let n = left.min(CHUNK as u64);
        data.clear();
        ends.clear();
        for _ in 0..n {
            synth.next_into(&mut data);
            ends.push(data.len());
        }
        bytes += data.len() as u64;
        let (t, c0) = (Instant::now(), thread_cpu_ns());
        let mut start = 0;
        for &end in &ends {
            c.ingest(&data[start..end]);
            start = end;
        }
        engine += t.elapsed();
        cpu += thread_cpu_ns().saturating_sub(c0);
        left -= n;
    }
    Run { records, bytes, engine, cpu: Duration::from_nanos(cpu), wall: wall.elapsed() }
}

/// Reads the file in blocks small enough to stay in the L2 cache and hands out each line in
/// place, found with `memchr`: no copy per line, and the engine reads bytes the block read
/// has just brought into cache. A line longer than the block grows it.
fn from_file(path: &str, c: &mut Clusterer) -> Run {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut buf = vec![0u8; 256 << 10];
    let (mut filled, mut records, mut bytes) = (0usize, 0u64, 0u64);
    let (t, c0) = (Instant::now(), thread_cpu_ns());
    let mut line = |rec: &[u8]| {
        if !rec.is_empty() {
            bytes += rec.len() as u64;
            records += 1;
            c.ingest(rec);
        }
    };
    loop {
        let n = file.read(&mut buf[filled..]).unwrap_or_else(|e| panic!("{path}: {e}"));
        filled += n;
        let mut start = 0;
        while let Some(k) = memchr::memchr(b'\n', &buf[start..filled]) {
            line(&buf[start..start + k]);
            start += k + 1;
        }
        if n == 0 {
            line(&buf[start..filled]);
            break;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
    let d = t.elapsed();
    let cpu = Duration::from_nanos(thread_cpu_ns().saturating_sub(c0));
    Run { records, bytes, engine: d, cpu, wall: d }
}

/// `ENGINE_SCALE_IN_MEMORY` set, and neither empty nor `0`.
fn in_memory() -> bool {
    std::env::var("ENGINE_SCALE_IN_MEMORY").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The file read whole and split into lines before the clock starts, as the Python
/// baseline's `--in-memory` does: only the engine is timed.
fn from_memory(path: &str, c: &mut Clusterer) -> Run {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut start = 0;
    let mut lines = Vec::new();
    for end in memchr::memchr_iter(b'\n', &data).chain([data.len()]) {
        lines.push(&data[start..end]);
        start = end + 1;
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    let (t, c0) = (Instant::now(), thread_cpu_ns());
    for rec in lines {
        if !rec.is_empty() {
            bytes += rec.len() as u64;
            records += 1;
            c.ingest(rec);
        }
    }
    let d = t.elapsed();
    let cpu = Duration::from_nanos(thread_cpu_ns().saturating_sub(c0));
    Run { records, bytes, engine: d, cpu, wall: d }
}

fn child(spec: &str) {
    let (size, mode) = spec.split_once(':').expect("size:mode");
    let track_keys = mode == "on";
    let seed: u64 = env_or("ENGINE_SCALE_SEED", "1").parse().expect("ENGINE_SCALE_SEED");
    let mut c = Clusterer::new(ClustererConfig { track_keys, ..Default::default() });
    let run = match std::env::var("ENGINE_SCALE_INPUT") {
        Ok(path) if in_memory() => from_memory(&path, &mut c),
        Ok(path) => from_file(&path, &mut c),
        Err(_) => synthetic(size.parse().expect("size"), seed, &mut c),
    };
    let stats = c.stats();
    let clusters = c.cluster_count();
    let secs = run.engine.as_secs_f64();
    let cpu = run.cpu.as_secs_f64();
    let a = c.finish();
    println!(
        "engine records={} track_keys={} in_memory={} records_per_sec={:.0} mb_per_sec={:.0} cpu_records_per_sec={:.0} cpu_mb_per_sec={:.0} peak_rss_mb={:.1} clusters={} keys={} errors={} malformed={} engine_secs={:.3} cpu_secs={:.3} wall_secs={:.3} avg_record_bytes={:.0}",
        run.records,
        track_keys,
        in_memory() || std::env::var_os("ENGINE_SCALE_INPUT").is_none(),
        run.records as f64 / secs,
        run.bytes as f64 / secs / 1e6,
        run.records as f64 / cpu,
        run.bytes as f64 / cpu / 1e6,
        peak_rss_mb(),
        clusters,
        a.keys.len(),
        stats.error_records,
        stats.malformed_records,
        secs,
        cpu,
        run.wall.as_secs_f64(),
        run.bytes as f64 / run.records.max(1) as f64,
    );
}

fn main() {
    if let Ok(spec) = std::env::var("ENGINE_SCALE_CHILD") {
        child(&spec);
        return;
    }
    // `cargo test --benches` runs bench targets with no `--bench` flag: keep that quick.
    let benching = std::env::args().any(|a| a == "--bench");
    let default_sizes = if benching { "100000,1000000,10000000" } else { "10000" };
    let sizes = env_or("ENGINE_SCALE_SIZES", default_sizes);
    let modes = env_or("ENGINE_SCALE_MODES", "off,on");
    let exe = std::env::current_exe().expect("current exe");
    for mode in modes.split(',') {
        for size in sizes.split(',') {
            let status = Command::new(&exe)
                .env("ENGINE_SCALE_CHILD", format!("{size}:{mode}"))
                .status()
                .expect("spawn child run");
            assert!(status.success(), "run {size}:{mode} failed");
            if std::env::var_os("ENGINE_SCALE_INPUT").is_some() {
                break;
            }
        }
    }
}
