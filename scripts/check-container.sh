#!/usr/bin/env bash
# Checks the Dockerfile, .dockerignore and docker-compose.yml without a Docker engine, then runs
# the service the way the image runs it (scripts/check-container.py says what is checked).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(scripts/tools-venv.sh)"
cargo build --quiet --bin cloudtrail-inspector
exec "$venv/bin/python" scripts/check-container.py "${CARGO_TARGET_DIR:-target}/debug/cloudtrail-inspector"
