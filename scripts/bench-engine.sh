#!/usr/bin/env bash
# Engine benchmark, side by side with the plain Python pipeline (json.loads + Drain3,
# scripts/bench_python_baseline.py), on one core, back to back on the same .jsonl file.
#
#   scripts/bench-engine.sh                 # real records (the default)
#   INPUT=both scripts/bench-engine.sh      # real records, then the generator's
#
# INPUT=real: every record of ../shared/data/cloudtrail (all three sets, 3,663 records, kept as
# they are, one compact JSON object a line) repeated to N records (examples/real_jsonl.rs).
# INPUT=synth: N records of the built-in generator (examples/synth.rs), preceded by the
# generator's streaming scale runs (SIZES) with key tracking off and on.
#
# Each file is measured two ways, each one engine keys off, engine keys on, Python in a row:
# `memory` reads the file whole before the clock starts, so only the pipelines are timed;
# `file` times the whole loop, reading lines from the file included. Ratios are printed from
# wall-clock rates and from on-CPU rates (the time each process was actually on a CPU), which
# differ when the machine is busy.
#
# Environment: INPUT (real|synth|both, default real), N (records per file, default 300000),
# READ (memory|file|both, default both), SIZES (generator scale runs, default
# 100000,1000000,10000000), SEED (default 1), OUT (default target/bench-input), PYTHON
# (default python3; `pip install drain3==0.9.11`, else its built-in fallback miner is used and
# the line says miner=fallback).
set -euo pipefail
cd "$(dirname "$0")/.."

INPUT=${INPUT:-real}
N=${N:-300000}
READ=${READ:-both}
SIZES=${SIZES:-100000,1000000,10000000}
SEED=${SEED:-1}
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/bench-input}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

case "$INPUT" in real) inputs=real ;; synth) inputs=synth ;; both) inputs="real synth" ;;
    *) echo "INPUT must be real, synth or both" >&2; exit 2 ;; esac
case "$READ" in memory) reads=memory ;; file) reads=file ;; both) reads="memory file" ;;
    *) echo "READ must be memory, file or both" >&2; exit 2 ;; esac

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(free -g | awk '/Mem:/ {print $2}') GB RAM"
if ! "$PYTHON" -c 'import drain3' 2>/dev/null; then
    echo "# drain3 not importable by $PYTHON (pip install drain3): the Python side uses its built-in fallback"
fi
cargo bench --quiet --no-run --bench engine_scale 2>/dev/null

# The value of `name=` in a result line (a leading space, so `records_per_sec` is not
# `cpu_records_per_sec`).
field() { grep -o " $2=[^ ]*" <<<" $1" | head -1 | cut -d= -f2; }

for input in $inputs; do
    if [ "$input" = real ]; then
        file="$OUT/real-$N.jsonl"
        [ -s "$file" ] || cargo run --quiet --release --example real_jsonl -- "$file" "$N"
    else
        echo "# engine on generated records (one core, ingest only)"
        ENGINE_SCALE_SIZES=$SIZES ENGINE_SCALE_SEED=$SEED cargo bench --quiet --bench engine_scale
        file="$OUT/records-$N-seed$SEED.jsonl"
        [ -s "$file" ] || cargo run --quiet --release --example synth -- jsonl "$file" "$N" --seed "$SEED"
    fi
    for read in $reads; do
        echo "# side by side: $input records, $file, read=$read, load average $(cut -d' ' -f1-3 /proc/loadavg)"
        if [ "$read" = memory ]; then mem=1 pyarg=--in-memory; else mem= pyarg=; fi
        off=$(ENGINE_SCALE_INPUT=$file ENGINE_SCALE_IN_MEMORY=$mem ENGINE_SCALE_MODES=off cargo bench --quiet --bench engine_scale | grep '^engine ')
        on=$(ENGINE_SCALE_INPUT=$file ENGINE_SCALE_IN_MEMORY=$mem ENGINE_SCALE_MODES=on cargo bench --quiet --bench engine_scale | grep '^engine ')
        py=$("$PYTHON" scripts/bench_python_baseline.py $pyarg "$file")
        printf '%s\n%s\n%s\n' "$off" "$on" "$py"
        echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
        for mode in off on; do
            line=$off
            [ "$mode" = on ] && line=$on
            awk -v input="$input" -v read="$read" -v mode="$mode" \
                -v w="$(field "$line" records_per_sec)" -v c="$(field "$line" cpu_records_per_sec)" \
                -v pw="$(field "$py" records_per_sec)" -v pc="$(field "$py" cpu_records_per_sec)" 'BEGIN {
                printf "ratio input=%s read=%s keys=%s wall_rust_over_python=%.1f cpu_rust_over_python=%.1f\n", input, read, mode, w / pw, c / pc
            }'
        done
    done
done
