#!/usr/bin/env bash
# Decompression speed of the gzip backends on CloudTrail delivery files: flate2 with its
# default backend (miniz_oxide), with zlib-rs and with zlib-ng, and libdeflate (libdeflater,
# whole files at once). The files are read into memory first, so only decompression is timed;
# one core; MB/s of decompressed JSON, by the wall clock and by the thread's time on a CPU
# (/proc/thread-self/schedstat), which a shared machine's load does not lower.
#
#   scripts/bench-gzip.sh DIR [ROUNDS]     DIR: a tree of *.json.gz (e.g. from examples/synth)
#
# Builds a throwaway crate under target/gzbench, once per backend (flate2 takes one backend
# per build). zlib-ng needs cmake; without it that line says it could not be built.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:?usage: scripts/bench-gzip.sh DIR [ROUNDS]}"
rounds="${2:-3}"
dir="$(cd "$dir" && pwd)"
bench=target/gzbench
mkdir -p "$bench/src"
cat > "$bench/Cargo.toml" <<'TOML'
[package]
name = "gzbench"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
flate2 = { version = "1", default-features = false }
libdeflater = { version = "1", optional = true }

[features]
miniz = ["flate2/rust_backend", "flate2/runtime_detection"]
zlib-rs = ["flate2/zlib-rs", "flate2/runtime_detection"]
zlib-ng = ["flate2/zlib-ng", "flate2/runtime_detection"]
libdeflate = ["dep:libdeflater", "flate2/rust_backend"]

[profile.release]
debug = false
TOML
cat > "$bench/src/main.rs" <<'RS'
use std::io::Read;
use std::time::Instant;

fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.to_string_lossy().ends_with(".json.gz") {
            out.push(std::fs::read(&p).unwrap());
        }
    }
}

/// Nanoseconds this thread has run on a CPU.
fn on_cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    s.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0.0) / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (backend, dir, rounds) = (&args[1], std::path::Path::new(&args[2]), args[3].parse::<u32>().unwrap());
    let mut gz = Vec::new();
    files(dir, &mut gz);
    let compressed: usize = gz.iter().map(Vec::len).sum();
    let (mut best, mut best_cpu) = (f64::MAX, f64::MAX);
    let mut out_bytes = 0usize;
    #[cfg(feature = "libdeflate")]
    let mut d = libdeflater::Decompressor::new();
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), on_cpu());
        out_bytes = 0;
        for f in &gz {
            #[cfg(feature = "libdeflate")]
            {
                // The gzip trailer's ISIZE: CloudTrail files are one member, well under 4 GiB.
                let n = u32::from_le_bytes(f[f.len() - 4..].try_into().unwrap()) as usize;
                let mut buf = vec![0u8; n];
                out_bytes += d.gzip_decompress(f, &mut buf).unwrap();
            }
            #[cfg(not(feature = "libdeflate"))]
            {
                // Sized up front as for libdeflate, so only decompression differs.
                let n = u32::from_le_bytes(f[f.len() - 4..].try_into().unwrap()) as usize;
                let mut buf = Vec::with_capacity(n + 1);
                flate2::read::MultiGzDecoder::new(&f[..]).read_to_end(&mut buf).unwrap();
                out_bytes += buf.len();
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
        best_cpu = best_cpu.min(on_cpu() - c);
    }
    println!(
        "{backend:>11}: {:6.0} MB/s decompressed on-CPU, {:6.0} MB/s wall ({} files, {:.1} MB gzipped, {:.1} MB JSON, best of {rounds})",
        out_bytes as f64 / 1e6 / best_cpu,
        out_bytes as f64 / 1e6 / best,
        gz.len(),
        compressed as f64 / 1e6,
        out_bytes as f64 / 1e6
    );
}
RS
built=()
for backend in miniz zlib-rs zlib-ng libdeflate; do
    if cargo build -q --release --manifest-path "$bench/Cargo.toml" --no-default-features --features "$backend" 2>"$bench/build-$backend.log"; then
        cp "$bench/target/release/gzbench" "$bench/gzbench-$backend"
        built+=("$backend")
    else
        echo "$(printf '%11s' "$backend"): could not be built here (see $bench/build-$backend.log)"
    fi
done
# Interleaved passes, so a change of load on a shared machine hits every backend alike.
for pass in 1 2; do
    echo "pass $pass, load: $(uptime)"
    for backend in "${built[@]}"; do
        "$bench/gzbench-$backend" "$backend" "$dir" "$rounds"
    done
done
