#!/usr/bin/env bash
# Runs the whole test suite: starts the machine's PostgreSQL if it is not running, then
# `cargo test` (which also exercises SQLite, the fake CloudWatch Logs server and the API).
set -euo pipefail
cd "$(dirname "$0")/.."
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$(scripts/ensure-postgres.sh)}"
exec cargo test "$@"
