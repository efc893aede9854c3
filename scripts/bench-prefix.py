#!/usr/bin/env python3
"""Time frozen ONNX prefixes in onnxruntime and compare with tract's timings from `host prefix-bench`.

Usage:
    scripts/bench-prefix.py [--doc docs/benchmarks.md] [--preamble TEXT] PREFIX.onnx TRACT.json [PREFIX.onnx TRACT.json ...]

PREFIX.onnx is the standalone prefix `host prefix-bench --prefix-out` wrote (the very graph tract timed), TRACT.json
its tract timings. onnxruntime runs the same file on the same batch sizes, the same number of timed runs after one
warm-up, with as many intra-op threads as the Rust side used (its JSON's `threads`) and all graph optimisations. With --doc, the section
"## Frozen prefix: tract vs onnxruntime" of that Markdown file is replaced (the file is created with a
"# Benchmarks" title when missing; other sections are left alone). Runs inside .venv-onnx (see check-onnx.py).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

SECTION = "## Frozen prefix: tract vs onnxruntime"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def ensure_packages() -> None:
    import importlib

    check = importlib.import_module("check-onnx")
    check.ensure_packages(Path(__file__).resolve())


def time_ort(path: Path, batches: list[int], reps: int, threads: int) -> list[tuple[int, float, float]]:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    per_sample = [int(d) for d in inp.shape[1:]]
    rng = np.random.default_rng(7)
    out = []
    for b in batches:
        x = rng.uniform(-1.0, 1.0, size=[b, *per_sample]).astype(np.float32)
        sess.run(None, {inp.name: x})  # warm-up
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            sess.run(None, {inp.name: x})
            times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        out.append((b, times[len(times) // 2], times[0]))
    return out


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = "?"
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = ["?"]
    return f"{model}, nproc = {nproc}, load average at the end {' '.join(load)}"


def write_section(doc: Path, body: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = f"{SECTION}\n\n{body.strip()}\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("" if end < 0 else text[end:])
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def main() -> int:
    args = sys.argv[1:]
    doc = None
    preamble = ""
    while args and args[0].startswith("--"):
        if args[0] == "--doc":
            doc, args = Path(args[1]), args[2:]
        elif args[0] == "--preamble":
            preamble, args = args[1], args[2:]
        else:
            print(__doc__)
            return 2
    if not args or len(args) % 2:
        print(__doc__)
        return 2
    ensure_packages()
    import onnxruntime as ort

    rows = []
    for i in range(0, len(args), 2):
        prefix, tract_json = Path(args[i]), Path(args[i + 1])
        t = json.loads(tract_json.read_text())
        batches = [r[0] for r in t["runs"]]
        reps = t.get("reps", 10)
        # The same thread count as the Rust side (its JSON's `threads`; 1 when absent).
        threads = int(t.get("threads") or 1)
        ort1 = time_ort(prefix, batches, reps, threads)
        # onnxruntime on the graph as the loader rewrote it for tract (host prefix-bench --rewritten-out).
        rewritten = t.get("rewritten_file")
        ort_rw = time_ort(Path(rewritten), batches, reps, threads) if rewritten else [(b, None, None) for b in batches]
        for (b, tm, tmin), (_, om, omin), (_, rm, _) in zip(t["runs"], ort1, ort_rw):
            ratio = tm / om
            plan = t.get("plan") or ("optimised" if t["optimized"] else "typed (into_optimized fails)")
            rw = t.get("rewrites") or {}
            nodes = f"{rw['nodes_before']} → {rw['nodes_after']}" if rw.get("nodes_before") else "–"
            engine = t.get("engine") or "tract"
            rows.append((Path(t["model"]).name, t["cut"], f"{engine}, {threads} thread(s), {plan}", nodes, b, tm, om, ratio, rm))
            print(
                f"{Path(t['model']).name} → {t['cut']}, {engine}, {threads} thread(s), batch {b}: Rust side {tm:.2f} ms (min {tmin:.2f}), "
                f"onnxruntime (Python) {om:.2f} ms (min {omin:.2f}), ratio {ratio:.2f}"
                + (f", onnxruntime on the rewritten graph {rm:.2f} ms" if rm is not None else "")
            )
    table = [
        "| model → cut | tract plan | nodes (file → tract) | batch | tract median ms | onnxruntime median ms "
        "| **tract / onnxruntime** | onnxruntime on tract's rewritten graph, ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, cut, plan, nodes, b, tm, om, ratio, rm in rows:
        rms = f"{rm:.2f}" if rm is not None else "–"
        table.append(f"| `{name}` → `{cut}` | {plan} | {nodes} | {b} | {tm:.2f} | {om:.2f} | **{ratio:.2f}** | {rms} |")
    body = "\n".join(
        [
            preamble.strip(),
            "",
            f"Machine: {machine()}; onnxruntime {ort.__version__} (CPU provider, 1 intra-op thread, "
            "sequential, all graph optimisations); tract-onnx 0.23.9 (one thread). Same prefix file, same batch "
            "sizes, same number of timed runs after one warm-up, medians. Inputs are uniform in [-1, 1].",
            "",
            *table,
        ]
    )
    print(body)
    if doc is not None:
        write_section(doc, body)
        print(f"section '{SECTION}' written to {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
