#!/usr/bin/env bash
# The CUDA backend's checks, for a machine with an NVIDIA GPU and the CUDA libraries (driver, cuBLAS, NVRTC):
#   1. the per-operation parity tests and the whole GPM+BECAME task update, CUDA against the CPU reference
#      (firmware::backend::tests, `cuda::*`, #[ignore]d without a GPU and run here with --include-ignored);
#   2. the per-task update benchmark, CPU backend vs CUDA backend vs the native CPU learner, on Split-MNIST
#      (task 2 of the MLP preset), written to out/cuda-check/*.json and summarised on stdout;
#   3. the device self-test on the GPU (firmware selftest --backend cuda).
# Usage: bash scripts/cuda-check.sh [cuda-12020|cuda-11040]   (the cudarc CUDA version feature; default 12.2 API)
# Needs the MNIST data (scripts/fetch-data.sh runs first). Fails loudly when no GPU is usable: nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
feature="${1:-cuda-12020}"
case "$feature" in cuda-12020 | cuda-11040) ;; *) echo "unknown CUDA feature '$feature'" >&2; exit 2 ;; esac
bash scripts/fetch-data.sh
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

echo "== parity tests (CUDA vs CPU, every op and a whole task update)"
cargo test --release -p firmware --features "$feature" --lib backend:: -- --include-ignored

echo "== per-task update: CPU backend, CUDA backend, native CPU learner (Split-MNIST task 2, 1 epoch per stage)"
out=out/cuda-check
mkdir -p "$out"
cargo build --release -p host --features "firmware/$feature"
for m in gpm+became gpm+became@cpu gpm+became@cuda; do
  target/release/host bench update --stream split-mnist --tasks 2 --epochs 1 --repeat 3 --method "$m" \
    --out "$out/update-split-mnist-${m//[+@]/-}.json"
done

echo "== device self-test on the GPU"
cargo build --release -p firmware --features "$feature"
target/release/firmware selftest --data data/mnist --backend cuda
