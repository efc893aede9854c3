#!/usr/bin/env bash
# The CUDA backend's checks, for a machine with an NVIDIA GPU and the CUDA libraries (driver, cuBLAS, NVRTC):
#   1. the per-operation parity tests, and two whole streams learned by the one learner with the GPU installed as
#      its GEMM device — GPM+BECAME on Split-MNIST and the field (Jetson Nano profile) class-incremental — against
#      the same runs on the CPU (edgelearn-learn's backend::tests, `cuda::*`, #[ignore]d without a GPU and run
#      here with --include-ignored);
#   2. the per-task update benchmark on Split-MNIST (batch 64) and PMNIST (batch 10), task 2, 1 epoch per stage:
#      the native CPU learner and the CUDA backend, each next to the same algorithm in PyTorch on the same
#      machine (scripts/bench_torch.py, 1 thread on the CPU; --device cuda on the GPU), written to
#      out/cuda-check/update-<stream>-<impl>.json and summarised on stdout;
#   3. the device self-test on the GPU (firmware selftest --backend cuda).
# Usage: bash scripts/cuda-check.sh [cuda-12020|cuda-11040]   (the cudarc CUDA version feature; default 12.2 API)
#   PREBUILT=DIR: take DIR/host, DIR/firmware and DIR/firmware-test (edgelearn-learn's lib test binary) built on
#   another x86-64 machine instead of running cargo here (a GPU machine without a Rust toolchain):
#     cargo build --release -p host --features firmware/cuda-12020
#     cargo build --release -p firmware --features cuda-12020 --bins
#     cargo test --release -p edgelearn-learn --features cuda-12020 --lib --no-run   # prints the test binary's path
#   The test binary reads data/mnist and boards/ through the path it was compiled at (<checkout>/data): link that
#   checkout path to this one if they differ.
# Needs the MNIST data (scripts/fetch-data.sh runs first). Fails loudly when no GPU is usable: nothing is skipped,
# except the PyTorch peer when no PyTorch with CUDA is installed (said on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
feature="${1:-cuda-12020}"
case "$feature" in cuda-12020 | cuda-11040) ;; *) echo "unknown CUDA feature '$feature'" >&2; exit 2 ;; esac
[ -n "${PREBUILT:-}" ] || bash scripts/fetch-data.sh
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

# cudarc (dynamic loading) looks for libcublas.so, libcublas.so.12, .11, …: a CUDA 13 install that ships only
# libcublas.so.13 / libnvrtc.so.13 (PyTorch's cu13 wheels, for one) is not found by those names. Link what is
# there under the unversioned names, first match per library.
libs=$(mktemp -d)
dirs=""
for n in cublas cublasLt nvrtc; do
  f=$(find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu "$(python3 -c 'import sys; print(sys.prefix)' 2>/dev/null || echo /nonexistent)" \
    -name "lib$n.so*" 2>/dev/null | grep -v stub | sort | head -1 || true)
  if [ -n "$f" ]; then ln -sf "$f" "$libs/lib$n.so"; dirs="$dirs:$(dirname "$f")"; fi
done
export LD_LIBRARY_PATH="$libs$dirs:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"

if [ -n "${PREBUILT:-}" ]; then
  host=$PREBUILT/host firmware=$PREBUILT/firmware
  echo "== parity tests (CUDA vs CPU, every op and a whole task update)"
  "$PREBUILT/firmware-test" backend:: --include-ignored --test-threads 1
else
  echo "== parity tests (CUDA vs CPU, every op and a whole task update)"
  cargo test --release -p edgelearn-learn --features "$feature" --lib backend:: -- --include-ignored --test-threads 1
  cargo build --release -p host --features "firmware/$feature"
  cargo build --release -p firmware --features "$feature"
  host=target/release/host firmware=target/release/firmware
fi

echo "== per-task update, task 2, 1 epoch per stage: Rust (CPU 1 thread, CUDA) and PyTorch (CPU 1 thread, CUDA)"
out=out/cuda-check
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
torch_cuda=0
python3 -c 'import torch, numpy; assert torch.cuda.is_available()' 2>/dev/null && torch_cuda=1
[ $torch_cuda = 1 ] || echo "PyTorch with CUDA not importable by python3: the PyTorch peer is not run"
summary() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('%-40s total %.4f s' % (sys.argv[1].split('/')[-1], d['total']), {k: round(v, 4) for k, v in d['phases'].items()}, 'alpha', d.get('alpha'))" "$1"; }
for s in split-mnist pmnist; do
  "$host" bench update --stream "$s" --repeat 3 --threads 1 --method gpm+became --out "$out/update-$s-rust-1t.json" >/dev/null
  summary "$out/update-$s-rust-1t.json"
  "$host" bench update --stream "$s" --repeat 3 --threads 1 --backend cuda --out "$out/update-$s-rust-cuda.json" >/dev/null
  summary "$out/update-$s-rust-cuda.json"
  if [ $torch_cuda = 1 ]; then
    rep=3; [ "$s" = pmnist ] && rep=2   # PyTorch's PMNIST update (batch 10) takes 10-20 s a run
    python3 scripts/bench_torch.py --stream "$s" --repeat $rep --threads 1 --out "$out/update-$s-pytorch-1t.json" >/dev/null
    summary "$out/update-$s-pytorch-1t.json"
    python3 scripts/bench_torch.py --stream "$s" --repeat $rep --threads 1 --device cuda --out "$out/update-$s-pytorch-cuda.json" >/dev/null
    summary "$out/update-$s-pytorch-cuda.json"
  fi
done

echo "== device self-test on the GPU"
"$firmware" selftest --data data/mnist --backend cuda
