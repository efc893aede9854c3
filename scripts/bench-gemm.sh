#!/usr/bin/env bash
# GEMM benchmark: the firmware's candidate kernels (matrixmultiply, gemm, faer; `host bench gemm`) and PyTorch's
# matmul (scripts/bench_gemm_torch.py) on the task update's shapes and on 1024³ (the peak), at 1 and 2 threads,
# in the same run. Writes docs/bench/gemm-{rust,pytorch}.json and the "GEMM" section of docs/benchmarks.md.
#
# Environment: THREADS (default "1,2"), OUT (default docs/bench), DOC (default docs/benchmarks.md; empty: leave
# docs alone), HOST (a prebuilt host binary instead of building target/release/host). Uses the .venv-bench of
# scripts/bench-update.sh (installs torch and numpy there on first use).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-1,2}
OUT=${OUT:-docs/bench}
DOC=${DOC-docs/benchmarks.md}
VENV=.venv-bench
PY=$VENV/bin/python

if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    echo "== installing torch and numpy from PyPI into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check torch numpy
fi
if [ -z "${HOST:-}" ]; then
    echo "== building host (release)" >&2
    cargo build --release -p host
    HOST=target/release/host
fi
mkdir -p "$OUT"
load() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_START=$(load)
"$HOST" bench gemm --shapes-out "$OUT/gemm-shapes.json"
echo "== PyTorch" >&2
"$PY" scripts/bench_gemm_torch.py --shapes "$OUT/gemm-shapes.json" --threads "$THREADS" --out "$OUT/gemm-pytorch.json"
echo "== Rust kernels" >&2
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
TORCH=$("$PY" -c 'import torch; print(f"torch {torch.__version__} (PyPI wheel, CPU)")')
PREAMBLE="Command: \`scripts/bench-gemm.sh\` ($(date -u +%Y-%m-%d)). Machine: $CPU, $(nproc) CPUs; \
$(rustc --version | cut -d' ' -f1-2); $TORCH. Load average at start $LOAD_START. GFLOP/s = 2·m·n·k per call, best of
5 batches of calls of at least 0.2 s each; \"% of peak\" is against PyTorch's 1024³ matmul with the same threads.
Raw results: \`$OUT/gemm-*.json\`."
args=(--threads "$THREADS" --out "$OUT/gemm-rust.json" --torch "$OUT/gemm-pytorch.json")
if [ -n "$DOC" ]; then args+=(--doc "$DOC" --preamble "$PREAMBLE"); fi
RUST_LOG=${RUST_LOG:-info} "$HOST" bench gemm "${args[@]}"
