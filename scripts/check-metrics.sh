#!/usr/bin/env bash
# The /metrics exposition as Prometheus reads it: starts the service (the debug build) on an
# empty SQLite database, makes it do some work over the bundled sample, scrapes it, and
# checks the text with promtool (`promtool check metrics`, the lint Prometheus ships; taken
# from Debian's prometheus package without installing it) and with prometheus_client's parser
# (scripts/check_metrics.py: the series operators alert on, zero-valued states included).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="$(scripts/tools-venv.sh api)"
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --bin cloudtrail-inspector

promtool="$(command -v promtool || true)"
if [ -z "$promtool" ]; then
    promtool="$target_dir/promtool/usr/bin/promtool"
    if ! "$promtool" --version >/dev/null 2>&1; then
        deb="$(mktemp -d)"
        (cd "$deb" && apt-get download prometheus >/dev/null 2>&1) \
            || { apt-get update -qq >/dev/null && (cd "$deb" && apt-get download prometheus >/dev/null 2>&1); }
        dpkg-deb -x "$deb"/prometheus_*.deb "$target_dir/promtool"
        rm -rf "$deb"
    fi
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DATA_DIR="$work/data" SCHEDULER=off LOG_FORMAT=json RUST_LOG=warn FILES_ROOT="$PWD/samples" \
    "$target_dir/debug/cloudtrail-inspector" serve --listen "127.0.0.1:$port" 2>"$work/service.log" &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

api() { curl -fsS -H 'content-type: application/json' "$@"; }
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
inspection() {
    api -X POST "$base/api/v1/inspections" -d '{"name": "'"$1"'", "log_groups": ["sample"],
        "source": {"kind": "files", "path": "cloudtrail"}, "aws": {"region": "us-east-1"}, "baseline_days": 0}' | id_of
}
succeeded="$(inspection succeeded)"
never="$(inspection never)"
disabled="$(inspection disabled)"
api -X PATCH "$base/api/v1/inspections/$disabled" -d '{"enabled": false}' >/dev/null
run="$(api -X POST "$base/api/v1/inspections/$succeeded/runs" \
    -d '{"window_start": "2026-01-15T08:00:00Z", "window_end": "2026-01-15T09:05:00Z"}' | id_of)"
api "$base/api/v1/runs/$run" >/dev/null

curl -fsS "$base/metrics" -o "$work/metrics.txt"
echo "== promtool check metrics"
"$promtool" check metrics <"$work/metrics.txt"
echo "== prometheus_client"
"$venv/bin/python" scripts/check_metrics.py "$work/metrics.txt" "$succeeded" "$never"
