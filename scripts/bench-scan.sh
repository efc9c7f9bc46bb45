#!/usr/bin/env bash
# Multi-core `scan` throughput on a tree of gzipped CloudTrail delivery files: the same scan
# with 1 worker and with N (default: every core), back to back, each under /usr/bin/time -v.
# Prints per run: wall time, files/s, records/s, MB/s gzipped, user+sys CPU seconds, peak
# RSS; then the ratios. `uptime` before each run: on a shared machine the load says how much
# the wall-time ratio can be trusted, and the CPU-time ratio says what the work cost.
#
#   scripts/bench-scan.sh [DIR] [N]
#
# BENCH_NICE=-15 (as root) runs the scans ahead of other work on a shared machine, so the
# wall-time ratio measures the scan rather than the neighbours.
#
# Without DIR, generates target/bench-scan/tree once (examples/synth, CloudTrail's layout,
# 1,500,000 records in files of at most 2,000, about 0.4 GB gzipped) and scans that.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-}"
jobs="${2:-$(nproc)}"
[ -n "${SKIP_BUILD:-}" ] || cargo build -q --release --bin cloudtrail-inspector --example synth
bin=target/release/cloudtrail-inspector
if [ -z "$dir" ]; then
    dir=target/bench-scan/tree
    if [ ! -d "$dir" ]; then
        target/release/examples/synth s3 "$dir" 1500000 --per-file 2000 --seed 7
    fi
fi
files=$(find "$dir" -name '*.json*' -type f | wc -l)
gz_mb=$(du -sm "$dir" | cut -f1)
echo "tree: $dir, $files files, $gz_mb MB on disk"

run() {
    local n=$1 out=target/bench-scan/scan-$1
    mkdir -p target/bench-scan
    echo "load before --jobs $n: $(uptime)"
    nice -n "${BENCH_NICE:-0}" /usr/bin/time -v "$bin" scan --no-progress --format json --jobs "$n" "$dir" >"$out.json" 2>"$out.time" || true
    python3 - "$out" "$n" "$files" "$gz_mb" <<'PY'
import json, re, sys
out, n, files, gz_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
doc = json.load(open(out + ".json"))
t = open(out + ".time").read()
def field(name):
    return re.search(re.escape(name) + r":\s*(.+)", t).group(1).strip()
wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
rss = int(field("Maximum resident set size (kbytes)")) / 1024
run = doc["run"]
records = run["records_scanned"]
print(f"--jobs {n}: {wall:.2f} s wall, {cpu / wall:.2f} cores busy, {files / wall:,.0f} files/s, {records / wall:,.0f} records/s, "
      f"{gz_mb / wall:,.1f} MB/s gzipped, {cpu:.2f} s CPU (user+sys), {records / cpu:,.0f} records per CPU-second, "
      f"peak RSS {rss:.0f} MB; {records:,} records, {run['error_records']:,} errors, {len(doc['clusters'])} clusters, "
      f"status {run['status']}")
open(out + ".sum", "w").write(f"{wall} {cpu} {records}\n")
PY
}
run 1
run "$jobs"
read -r w1 c1 r1 <target/bench-scan/scan-1.sum
read -r wn cn rn <"target/bench-scan/scan-$jobs.sum"
python3 -c "
w1, c1, wn, cn = $w1, $c1, $wn, $cn
print(f'{$jobs} workers vs 1: {w1 / wn:.2f}x the throughput (wall), CPU time {cn / c1:.2f}x of one worker\'s')
"
