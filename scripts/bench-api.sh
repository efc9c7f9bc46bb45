#!/usr/bin/env bash
# API under load: seeds 100,000 runs and 1,000,000 cluster rows (and as many run cluster rows)
# into Postgres and into SQLite, serves each with the release build, and sends each endpoint
# 500 requests/s for 30 s with oha. One line per endpoint and backend:
#
#   api backend=… endpoint=… rps=… requests=… p50_ms=… p99_ms=… max_ms=… non_2xx=… errors=…
#
#   scripts/bench-api.sh
#
# Needs oha (`cargo install oha --locked`) and, for Postgres, a server at PG_ADMIN_URL
# (scripts/ensure-postgres.sh starts the machine's). Environment: BACKENDS (postgres,sqlite),
# RATE (500), DURATION (30s), SEED_ARGS ("100 1000 10 10000": inspections, runs per
# inspection, clusters per run, clusters per inspection), PORT (18080), KEEP=1 to reuse a
# seeded database from an earlier run (same OUT), OUT (target/bench-api).
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS=${BACKENDS:-postgres,sqlite}
RATE=${RATE:-500}
DURATION=${DURATION:-30s}
SEED_ARGS=${SEED_ARGS:-100 1000 10 10000}
PORT=${PORT:-18080}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-api}
PG_ADMIN_URL=${PG_ADMIN_URL:-${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}}
PG_DB=cti_bench_api
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
mkdir -p "$OUT"

[ -x "$OHA" ] || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(free -g | awk '/Mem:/ {print $2}') GB RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"

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
            base=${PG_ADMIN_URL%/*}
            url="$base/$PG_DB"
            if [ "${KEEP:-0}" != 1 ] || [ ! -s "$OUT/seed-postgres.txt" ]; then
                psql "$PG_ADMIN_URL" -qc "drop database if exists $PG_DB with (force)" -c "create database $PG_DB"
                "$SEED" "$url" $SEED_ARGS | tee "$OUT/seed-postgres.txt"
            fi
            seedfile=$OUT/seed-postgres.txt
            ;;
        sqlite)
            url="sqlite://$OUT/api.db"
            if [ "${KEEP:-0}" != 1 ] || [ ! -s "$OUT/seed-sqlite.txt" ]; then
                rm -f "$OUT"/api.db*
                "$SEED" "$url" $SEED_ARGS | tee "$OUT/seed-sqlite.txt"
            fi
            seedfile=$OUT/seed-sqlite.txt
            ;;
        *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    inspection=$(sed -n 's/.*inspection_id=\([^ ]*\).*/\1/p' "$seedfile")
    run=$(sed -n 's/.*run_id=\([^ ]*\).*/\1/p' "$seedfile")

    DATABASE_URL=$url DATA_DIR=$OUT/data SCHEDULER=off RUST_LOG=warn LOG_FORMAT=json \
        "$BIN" serve --listen "127.0.0.1:$PORT" >"$OUT/serve-$backend.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$PORT/api/v1/runs?limit=1" >/dev/null && break
        sleep 0.2
    done

    for endpoint in "/api/v1/runs?limit=50" "/api/v1/runs/$run" "/api/v1/inspections/$inspection/clusters"; do
        name=$(echo "$endpoint" | sed -e "s/$run/{id}/" -e "s/$inspection/{id}/")
        # Warm up the caches the way a running service has them.
        "$OHA" --no-tui -q 100 -z 3s "http://127.0.0.1:$PORT$endpoint" >/dev/null
        json=$OUT/oha-$backend-$(echo "$name" | tr -c 'a-z0-9' '_').json
        "$OHA" --no-tui --output-format json --latency-correction --wait-ongoing-requests-after-deadline -q "$RATE" -z "$DURATION" \
            "http://127.0.0.1:$PORT$endpoint" >"$json"
        python3 - "$json" "$backend" "$name" <<'EOF'
import json, sys
path, backend, name = sys.argv[1:]
d = json.load(open(path))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
total = sum(codes.values())
errors = sum(d.get("errorDistribution", {}).values())
ms = lambda v: f"{v * 1000:.2f}" if v is not None else "nan"
print(f"api backend={backend} endpoint={name} rps={s['requestsPerSec']:.0f} requests={total} "
      f"p50_ms={ms(p['p50'])} p99_ms={ms(p['p99'])} max_ms={ms(s['slowest'])} non_2xx={total - ok} errors={errors}")
EOF
    done
    stop_server
done
