#!/usr/bin/env bash
# `scan s3://…` against the fake S3 server (examples/fake_s3.rs, the tests' fake) serving an
# organization trail built from the real records in tests/data/cloudtrail, and, back to back,
# `scan` of the same files on disk: objects/s, records/s, MB/s (gzipped and raw), peak RSS.
#
#   scripts/bench-s3.sh
#
# Environment: OBJECTS (default 2000), RECORDS_PER_OBJECT (default 100), OUT (default
# target/bench-s3; the files on disk, deleted at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

OBJECTS=${OBJECTS:-2000}
PER=${RECORDS_PER_OBJECT:-100}
target_dir="${CARGO_TARGET_DIR:-target}"
OUT=${OUT:-$target_dir/bench-s3}
rm -rf "$OUT"
mkdir -p "$OUT"

cargo build --quiet --release --example fake_s3 --bin cloudtrail-inspector
bin="$target_dir/release/cloudtrail-inspector"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"

# The fake serves until its stdin closes.
exec 3> >(exec "$target_dir/release/examples/fake_s3" "$OBJECTS" --records-per-object "$PER" --write-dir "$OUT" >"$OUT/fake.out")
for _ in $(seq 600); do
    [ -s "$OUT/fake.out" ] && break
    sleep 0.1
done
read -r info <"$OUT/fake.out"
echo "# fake: $info"
eval "$(echo "$info" | tr ' ' '\n' | grep -E '^(endpoint|bucket|prefix|objects|records|bytes|raw_bytes)=')"

# One scan: prints "<label> <seconds> <peak RSS KB> <records read>".
measure() {
    local label=$1
    shift
    local t0 t1 rss n
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$OUT/rss" "$bin" scan --no-progress --format json "$@" >"$OUT/report.json" 2>"$OUT/stderr" || true
    t1=$(date +%s.%N)
    rss=$(tail -1 "$OUT/rss")
    n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run"]["records_scanned"])' "$OUT/report.json")
    echo "$label $(echo "$t1 - $t0" | bc) $rss $n"
}

export AWS_ACCESS_KEY_ID=AKIABENCHBENCHBENCH1 AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
s3=$(measure s3 --endpoint-url "$endpoint" "s3://$bucket/$prefix")
files=$(measure files "$OUT/$prefix")
exec 3>&-

python3 - "$objects" "$records" "$bytes" "$raw_bytes" "$s3" "$files" <<'PY'
import sys
objects, records, gz, raw = map(int, sys.argv[1:5])
rows = [r.split() for r in sys.argv[5:]]
print(f"# {objects} objects, {records} records, {gz/1e6:.1f} MB gzipped, {raw/1e6:.1f} MB raw")
print(f"{'source':6} {'seconds':>8} {'objects/s':>10} {'records/s':>10} {'MB/s gz':>8} {'MB/s raw':>9} {'peak RSS MB':>12} {'records read':>13}")
times = {}
for label, secs, rss, n in rows:
    s = float(secs)
    times[label] = s
    print(f"{label:6} {s:8.2f} {objects/s:10.0f} {records/s:10.0f} {gz/1e6/s:8.1f} {raw/1e6/s:9.1f} {int(rss)/1024:12.0f} {n:>13}")
print(f"# s3 / files throughput: {times['files']/times['s3']:.2f}")
PY
rm -rf "$OUT"
