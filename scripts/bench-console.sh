#!/usr/bin/env bash
# Console pages on a long history: the seeded database of scripts/bench-api.sh (100,000 runs,
# 1,000,000 clusters; reused when it is already there), served by the release build, each page
# fetched N times in a row. One line per page and backend, the time to the first byte on
# loopback (the server's time plus a few tens of microseconds):
#
#   console backend=… page=… n=… bytes=… p50_ms=… p90_ms=… max_ms=…
#
#   scripts/bench-console.sh
#
# Environment: BACKENDS (postgres,sqlite), N (50), PORT (18081), OUT (target/bench-api, shared
# with bench-api.sh), SEED_ARGS as in bench-api.sh, PG_ADMIN_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS=${BACKENDS:-postgres,sqlite}
N=${N:-50}
PORT=${PORT:-18081}
SEED_ARGS=${SEED_ARGS:-100 1000 10 10000}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-api}
PG_ADMIN_URL=${PG_ADMIN_URL:-${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}}
PG_DB=cti_bench_api
mkdir -p "$OUT"
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build --quiet --release --bin cloudtrail-inspector --example seed_history
BIN=$TARGET/release/cloudtrail-inspector
SEED=$TARGET/release/examples/seed_history

server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

for backend in ${BACKENDS//,/ }; do
    case $backend in
        postgres)
            url="${PG_ADMIN_URL%/*}/$PG_DB"
            seedfile=$OUT/seed-postgres.txt
            if [ ! -s "$seedfile" ]; then
                psql "$PG_ADMIN_URL" -qc "drop database if exists $PG_DB with (force)" -c "create database $PG_DB"
                "$SEED" "$url" $SEED_ARGS | tee "$seedfile"
            fi
            ;;
        sqlite)
            url="sqlite://$OUT/api.db"
            seedfile=$OUT/seed-sqlite.txt
            if [ ! -s "$seedfile" ]; then
                rm -f "$OUT"/api.db*
                "$SEED" "$url" $SEED_ARGS | tee "$seedfile"
            fi
            ;;
        *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    inspection=$(sed -n 's/.*inspection_id=\([^ ]*\).*/\1/p' "$seedfile")
    run=$(sed -n 's/.*run_id=\([^ ]*\).*/\1/p' "$seedfile")

    DATABASE_URL=$url DATA_DIR=$OUT/data SCHEDULER=off RUST_LOG=warn LOG_FORMAT=json \
        "$BIN" serve --listen "127.0.0.1:$PORT" >"$OUT/serve-console-$backend.log" 2>&1 &
    server_pid=$!
    base="http://127.0.0.1:$PORT"
    for _ in $(seq 1 150); do
        curl -sf "$base/api/v1/runs?limit=1" >/dev/null && break
        sleep 0.2
    done
    cluster=$(curl -sf "$base/api/v1/inspections/$inspection/clusters?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')

    for page in "/console" "/console/inspections/$inspection" "/console/runs/$run" "/console/clusters/$cluster" \
        "/console/events?inspection=$inspection"; do
        name=$(echo "$page" | sed -e "s/$run/{id}/" -e "s/$inspection/{id}/" -e "s/$cluster/{id}/")
        curl -sf -o /dev/null "$base$page" # warm up
        for _ in $(seq 1 "$N"); do
            curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_starttransfer}\n' "$base$page"
        done | python3 -c '
import sys
backend, name = sys.argv[1:]
rows = [l.split() for l in sys.stdin if l.strip()]
bad = [r for r in rows if r[0] != "200"]
if bad:
    sys.exit(f"{name}: {len(bad)} answers were not 200: {bad[0]}")
ms = sorted(float(r[2]) * 1000 for r in rows)
pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
print(f"console backend={backend} page={name} n={len(ms)} bytes={rows[0][1]} "
      f"p50_ms={pick(0.5):.1f} p90_ms={pick(0.9):.1f} max_ms={ms[-1]:.1f}")
' "$backend" "$name"
    done
    stop_server
done
