#!/usr/bin/env bash
# Engine benchmark, end to end: builds release, streams 10^5/10^6/10^7 generated records
# through the engine (key tracking off and on), then runs the engine and the plain Python
# baseline (json.loads + Drain3) side by side on one generated .jsonl file and prints the ratio.
#
#   scripts/bench-engine.sh
#
# Environment: SIZES (default 100000,1000000,10000000), N for the side-by-side file
# (default 1000000), SEED (default 1), OUT (default target/bench-input), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-100000,1000000,10000000}
N=${N:-1000000}
SEED=${SEED:-1}
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/bench-input}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(free -g | awk '/Mem:/ {print $2}') GB RAM"

echo "# engine on generated records (one core, ingest only)"
ENGINE_SCALE_SIZES=$SIZES ENGINE_SCALE_SEED=$SEED cargo bench --quiet --bench engine_scale

input="$OUT/records-$N-seed$SEED.jsonl"
if [ ! -s "$input" ]; then
    cargo run --quiet --release --example synth -- jsonl "$input" "$N" --seed "$SEED"
fi

echo "# side by side on $input (whole loop, reading lines included)"
rust_off=$(ENGINE_SCALE_INPUT=$input ENGINE_SCALE_MODES=off cargo bench --quiet --bench engine_scale | grep '^engine ')
rust_on=$(ENGINE_SCALE_INPUT=$input ENGINE_SCALE_MODES=on cargo bench --quiet --bench engine_scale | grep '^engine ')
if ! "$PYTHON" -c 'import drain3' 2>/dev/null; then
    echo "# drain3 not importable (pip install drain3): the Python side uses its built-in fallback"
fi
py=$("$PYTHON" scripts/bench_python_baseline.py "$input")
echo "$rust_off"
echo "$rust_on"
echo "$py"

rate() { sed -n 's/.*records_per_sec=\([0-9.]*\).*/\1/p' <<<"$1"; }
awk -v off="$(rate "$rust_off")" -v on="$(rate "$rust_on")" -v py="$(rate "$py")" 'BEGIN {
    printf "ratio track_keys=false rust_over_python=%.1f\n", off / py
    printf "ratio track_keys=true rust_over_python=%.1f\n", on / py
}'
