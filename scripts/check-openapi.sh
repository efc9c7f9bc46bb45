#!/usr/bin/env bash
# The API's contract as outside tools see it: the OpenAPI document (committed and served)
# passes openapi-spec-validator, every example in it is valid against its schema, and a
# client generated from it by openapi-python-client drives the live service, every answer
# parsed by the generated code. Starts the service (the debug build) on an empty SQLite
# database with an API token.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="$(cd "$(scripts/tools-venv.sh api)" && pwd)"
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --bin cloudtrail-inspector
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="check-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
DATA_DIR="$work/data" API_TOKEN="$token" SCHEDULER=off LOG_FORMAT=json RUST_LOG=warn FILES_ROOT="$PWD/samples" \
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
curl -fsS "$base/api-docs/openapi.json" -o "$work/served.json"

echo "== openapi-spec-validator"
"$venv/bin/openapi-spec-validator" openapi/openapi.json "$work/served.json"
echo "== examples"
"$venv/bin/python" scripts/check_openapi.py examples "$work/served.json"
echo "== a generated client"
# ruff, which the generator formats its output with, is in the virtualenv.
PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate --path "$work/served.json" --meta none \
    --output-path "$work/client/cti_client" >"$work/generate.log" 2>&1 \
    || { cat "$work/generate.log" >&2; exit 1; }
if grep -qi 'warning' "$work/generate.log"; then
    echo "openapi-python-client warned about the document:" >&2
    cat "$work/generate.log" >&2
    exit 1
fi
PYTHONPATH="$work/client" "$venv/bin/python" scripts/check_openapi.py client "$base" "$token" \
    || { echo "the service's log:" >&2; tail -30 "$work/service.log" >&2; exit 1; }
