#!/usr/bin/env bash
# Per-task update benchmark: GPM + BECAME in Rust (`host bench update`) against the same algorithm in PyTorch on
# the CPU (scripts/bench_torch.py), on the same machine in the same run, with the same number of threads on both
# sides (Rust: `--threads N`, the board profile's `threads`; PyTorch: torch.set_num_threads(N) with OMP/MKL/
# OpenBLAS limited to N).
#
# Times task 2 of each stream (stage 1, stage 2, Fisher, merge, basis update), writes
# docs/bench/update-<stream>-<impl>-<N>t.json, prints Markdown tables (Rust seconds, PyTorch seconds,
# Rust/PyTorch, one table per stream and thread count) and puts them into the "Per-task update: Rust vs PyTorch"
# section of docs/benchmarks.md.
#
# Needs the MNIST and Fashion-MNIST IDX files under data/ (scripts/fetch-data.sh). Installs torch and numpy from
# PyPI into .venv-bench on first use (the Linux torch wheel pulls its CUDA runtime packages: about 5.5 GB on disk;
# the benchmark itself runs on the CPU).
#
# Environment: EPOCHS (default 1, epochs per stage for both implementations), STREAMS (default
# "pmnist split-mnist split-fmnist"; split-fmnist is the LeNet CNN), THREADS (default "1 2"), OUT (default
# docs/bench), DOC (default docs/benchmarks.md; empty: leave docs alone), HOST (a prebuilt host binary to use
# instead of building target/release/host), REPEAT (default 3: runs from scratch per implementation and thread
# count, each phase keeps its fastest run).
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHS=${EPOCHS:-1}
REPEAT=${REPEAT:-3}
STREAMS=${STREAMS:-pmnist split-mnist split-fmnist}
THREADS=${THREADS:-1 2}
OUT=${OUT:-docs/bench}
DOC=${DOC-docs/benchmarks.md}
VENV=.venv-bench
PY=$VENV/bin/python

if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    echo "== installing torch and numpy from PyPI into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check torch numpy
    "$PY" -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'
fi

if [ -z "${HOST:-}" ]; then
    echo "== building host (release)" >&2
    cargo build --release -p host
    HOST=target/release/host
fi
mkdir -p "$OUT"

load() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_START=$(load)
files=()
for s in $STREAMS; do
    for t in $THREADS; do
        echo "== $s, $t thread(s): Rust" >&2
        "$HOST" bench update --stream "$s" --epochs "$EPOCHS" --repeat "$REPEAT" --threads "$t" \
            --out "$OUT/update-$s-rust-${t}t.json"
        echo "== $s, $t thread(s): PyTorch" >&2
        OMP_NUM_THREADS=$t MKL_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t \
            "$PY" scripts/bench_torch.py --stream "$s" --epochs "$EPOCHS" --threads "$t" --repeat "$REPEAT" \
            --out "$OUT/update-$s-pytorch-${t}t.json" >/dev/null
        files+=("$OUT/update-$s-rust-${t}t.json" "$OUT/update-$s-pytorch-${t}t.json")
    done
done
LOAD_END=$(load)

CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
TORCH=$("$PY" -c 'import torch, numpy; print(f"torch {torch.__version__} (PyPI wheel, CPU), numpy {numpy.__version__}")')
PREAMBLE="Command: \`EPOCHS=$EPOCHS REPEAT=$REPEAT THREADS=\"$THREADS\" scripts/bench-update.sh\` ($(date -u +%Y-%m-%d)). \
Machine: $CPU, $(nproc) CPUs (\`nproc\`); $(rustc --version | cut -d' ' -f1-2); $TORCH. \
Load average (1/5/15 min) at start $LOAD_START, at end $LOAD_END.

Timed: task 2 of the stream with GPM + BECAME (task 1 is learned first, untimed), $EPOCHS epoch(s) per stage in
both implementations, the same thread count on both sides; each phase is its fastest of the runs named in the
column heading. Ratios are Rust seconds / PyTorch seconds (lower is better for Rust; the target is ≤ 0.2).
For throughput the ratio is PyTorch samples/s / Rust samples/s, the same direction. Raw results:
\`$OUT/update-*.json\`."

if [ -n "$DOC" ]; then
    "$HOST" bench table "${files[@]}" --doc "$DOC" --preamble "$PREAMBLE" | tee "$OUT/update.md"
else
    "$HOST" bench table "${files[@]}" | tee "$OUT/update.md"
fi
