#!/usr/bin/env bash
# A slow-client attack on the service, from this host to itself: starts the service (SQLite in
# a temporary directory, loopback only), runs scripts/slow_clients.py against it, and prints
# its summary line (see that script), e.g.
#
#   slow-clients connections=10000 hold_s=60 probes=… probe_failures=0 … rss_after_mb=…
#
#   scripts/slow-clients.sh
#
# Environment: CONNECTIONS (10000), HOLD (60 s of attack), INTERVAL (5 s between a slow
# client's bytes), SETTLE (10 s before memory is read again), ROUNDS (1: attacks in a row on
# the same process, a summary line each), BIN (the binary; default the
# release build, built if missing), PORT (18090), SERVICE_ENV (extra variables for the
# service, e.g. "HEADER_READ_TIMEOUT_SECS=10"). The open-file limit is raised for this script
# and its children only (the attacker needs one descriptor per connection too); everything
# is stopped when the script ends, or after HOLD + SETTLE + 120 s per round at most.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-10000}
HOLD=${HOLD:-60}
INTERVAL=${INTERVAL:-5}
SETTLE=${SETTLE:-10}
PORT=${PORT:-18090}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET/release/cloudtrail-inspector}
[ -x "$BIN" ] || cargo build --quiet --release --bin cloudtrail-inspector

ulimit -n "$(( CONNECTIONS * 2 + 4096 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); open-file limit $(ulimit -n); $BIN"

dir=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

BIN=$(realpath "$BIN")
# From the temporary directory, so that no `.env` of the working tree is read.
# shellcheck disable=SC2086
(cd "$dir" && exec env -u DATABASE_URL DATA_DIR="$dir" SCHEDULER=off LISTEN_ADDR="127.0.0.1:$PORT" ${SERVICE_ENV:-} \
    "$BIN" serve >"$dir/service.log" 2>&1) &
server_pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$dir/service.log"; exit 1; }

for _ in $(seq "${ROUNDS:-1}"); do
    timeout "$(( ${HOLD%.*} + ${SETTLE%.*} + 120 ))" \
        python3 scripts/slow_clients.py "$PORT" "$server_pid" "$CONNECTIONS" "$HOLD" "$INTERVAL" "$SETTLE"
done
echo "# service log: $(wc -l <"$dir/service.log") lines, $(grep -c 'Too many open files' "$dir/service.log" || true) about open files"
