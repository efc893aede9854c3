#!/usr/bin/env python3
"""PyTorch's matmul on the shapes of `host bench gemm` (host/src/benches/gemm.rs SHAPES, passed in with --shapes),
with each thread count, in the JSON format of `host bench gemm`:

    {"firmware_kernel": "", "version": "...", "timings": [{"kernel": "pytorch", "threads", "shape", "gflops"}]}

GFLOP/s is 2·m·n·k per call, best of --rounds batches of calls lasting at least --min-seconds each. Operands are
laid out as the firmware stores them (a transposed operand is a transposed view, as in the Rust benchmark).

Usage: bench_gemm_torch.py --shapes SHAPES.json --threads 1,2 --out FILE.json
"""

import argparse
import json
import time

import torch


def best_gflops(flops, rounds, min_s, f):
    f()
    t = time.perf_counter()
    f()
    once = max(time.perf_counter() - t, 1e-7)
    calls = max(1, int(min_s / once + 0.999))
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            f()
        best = min(best, (time.perf_counter() - t) / calls)
    return flops / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=0.2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    shapes = json.load(open(args.shapes))
    torch.manual_seed(0)
    timings = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for s in shapes:
            m, k, n = s["m"], s["k"], s["n"]
            a = torch.rand(k, m).t() if s["ta"] else torch.rand(m, k)
            b = torch.rand(n, k).t() if s["tb"] else torch.rand(k, n)
            c = torch.empty(m, n)
            g = best_gflops(2.0 * m * n * k, args.rounds, args.min_seconds, lambda: torch.mm(a, b, out=c))
            print(f"{s['name']:<40} pytorch {threads} thread(s): {g:8.1f} GFLOP/s", flush=True)
            timings.append({"kernel": "pytorch", "threads": threads, "shape": s["name"], "gflops": g})
    with open(args.out, "w") as f:
        json.dump({"firmware_kernel": "", "version": f"torch {torch.__version__}", "timings": timings}, f, indent=1)


if __name__ == "__main__":
    main()
