//! Criterion benchmark of the engine: parse + select + fingerprint + cluster over generated
//! CloudTrail records, with and without access-key tracking.
//!
//! Records are generated in chunks as the benchmark goes (never all at once) and only the
//! `ingest` calls are timed (`iter_custom`). 10^5 and 10^6 records by default; set
//! `ENGINE_BENCH_10M=1` to add 10^7 (slow: criterion repeats each size ten times).
//!
//! The `files` group times the reading of CloudTrail's delivery files (`{"Records": [...]}`,
//! 100 records a file, keys on as the files source reads them) from bytes in memory: splitting
//! the file into records plus the engine's work on each.
//!
//! `cargo bench --bench engine`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

use cloudtrail_inspector::engine::{Clusterer, ClustererConfig};
use cloudtrail_inspector::source::files::ingest_bytes;
use cloudtrail_inspector::synth::{Synth, SynthConfig};

const CHUNK: usize = 10_000;

/// Generates `records` records and feeds them to a fresh clusterer, returning the time spent
/// in the engine only.
fn run(records: u64, track_keys: bool) -> Duration {
    let mut synth = Synth::new(SynthConfig::default());
    let mut c = Clusterer::new(ClustererConfig { track_keys, ..Default::default() });
    let mut data = Vec::with_capacity(CHUNK * 1600);
    let mut ends = Vec::with_capacity(CHUNK);
    let (mut spent, mut left) = (Duration::ZERO, records);
    while left > 0 {
        let n = left.min(CHUNK as u64);
        data.clear();
        ends.clear();
        for _ in 0..n {
            synth.next_into(&mut data);
            ends.push(data.len());
        }
        let t = Instant::now();
        let mut start = 0;
        for &end in &ends {
            c.ingest(&data[start..end]);
            start = end;
        }
        spent += t.elapsed();
        left -= n;
    }
    let t = Instant::now();
    std::hint::black_box(c.finish());
    spent + t.elapsed()
}

fn engine(cr: &mut Criterion) {
    let mut sizes = vec![100_000u64, 1_000_000];
    if std::env::var_os("ENGINE_BENCH_10M").is_some() {
        sizes.push(10_000_000);
    }
    let mut g = cr.benchmark_group("engine");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    for &n in &sizes {
        g.throughput(Throughput::Elements(n));
        g.measurement_time(Duration::from_secs(if n >= 1_000_000 { 10 } else { 3 }));
        for track_keys in [false, true] {
            let id = BenchmarkId::new(if track_keys { "keys_on" } else { "keys_off" }, n);
            g.bench_function(id, |b| b.iter_custom(|iters| (0..iters).map(|_| run(n, track_keys)).sum()));
        }
    }
    g.finish();
}

/// Records per delivery file, about what CloudTrail writes for a busy five minutes.
const FILE_RECORDS: usize = 100;

/// `records` records as delivery files in memory, then the time to read them all.
fn run_files(records: u64) -> Duration {
    let mut synth = Synth::new(SynthConfig::default());
    let mut c = Clusterer::new(ClustererConfig { track_keys: true, ..Default::default() });
    let (mut spent, mut left) = (Duration::ZERO, records);
    let mut files: Vec<Vec<u8>> = Vec::new();
    while left > 0 {
        files.clear();
        let mut chunk = left.min(CHUNK as u64);
        left -= chunk;
        while chunk > 0 {
            let n = chunk.min(FILE_RECORDS as u64);
            chunk -= n;
            let mut file = b"{\"Records\":[".to_vec();
            for i in 0..n {
                if i > 0 {
                    file.push(b',');
                }
                synth.next_into(&mut file);
            }
            file.extend_from_slice(b"]}");
            files.push(file);
        }
        let t = Instant::now();
        for f in &files {
            std::hint::black_box(ingest_bytes(f, &mut c));
        }
        spent += t.elapsed();
    }
    let t = Instant::now();
    std::hint::black_box(c.finish());
    spent + t.elapsed()
}

fn files(cr: &mut Criterion) {
    let n = 100_000u64;
    let mut g = cr.benchmark_group("files");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::new("delivery", n), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_files(n)).sum())
    });
    g.finish();
}

criterion_group!(benches, engine, files);
criterion_main!(benches);
