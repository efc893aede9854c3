#!/usr/bin/env python3
"""Reproducers for docs/upstream/tract-frozen-prefix.md: writes the ONNX files into a folder and, with --time,
times them in onnxruntime (one thread, sequential, median of REPS runs) for comparison with the tract side
(`cargo run --release -p edgelearn-onnx --example tract_repro -- time FILE REPS`).

    python3 docs/upstream/tract_repro.py OUT_DIR [--time REPS]

Needs `onnx`, `numpy` (and `onnxruntime` for --time): `pip install onnx onnxruntime numpy`.
"""
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


def save(out, name, nodes, inp, outp, inits):
    g = h.make_graph(nodes, name, [inp], [outp], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(out / f"{name}.onnx"))
    return out / f"{name}.onnx"


def models(out):
    rng = np.random.default_rng(0)
    c = 8
    w1 = nh.from_array(rng.standard_normal((c, c, 1, 1)).astype(np.float32), "w1")
    w2 = nh.from_array(rng.standard_normal((2 * c, c, 1, 1)).astype(np.float32), "w2")
    files = []
    # 1. Two 1x1 convolutions, the second with stride 2: fails to optimise with a symbolic batch, fine with 1 or 4.
    for batch in ("N", 1, 4):
        nodes = [
            h.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[1, 1]),
            h.make_node("Conv", ["c1", "w2"], ["y"], strides=[2, 2], kernel_shape=[1, 1]),
        ]
        files.append(save(out, f"strided_1x1_after_1x1_batch{batch}", nodes,
                          h.make_tensor_value_info("x", T.FLOAT, [batch, c, 8, 8]),
                          h.make_tensor_value_info("y", T.FLOAT, [batch, 2 * c, 4, 4]), [w1, w2]))
    # 2. Max pooling 2x2, stride 1 and 2, at the shipped CNN's first-stage shape (batch 32, 20 channels, 24x24).
    for s in (1, 2):
        side = 23 if s == 1 else 12
        files.append(save(out, f"maxpool_2x2_s{s}",
                          [h.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[s, s])],
                          h.make_tensor_value_info("x", T.FLOAT, [32, 20, 24, 24]),
                          h.make_tensor_value_info("y", T.FLOAT, [32, 20, side, side]), []))
    return files


def time_ort(f, reps):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(str(f), o, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    n = int(np.prod(shape))
    # The same input as the Rust side: ((i * 7919) % 2001) / 1000 - 1.
    x = (((np.arange(n) * 7919) % 2001) / 1000.0 - 1.0).astype(np.float32).reshape(shape)
    s.run(None, {i.name: x})
    t = []
    for _ in range(reps):
        a = time.perf_counter()
        s.run(None, {i.name: x})
        t.append((time.perf_counter() - a) * 1e3)
    print(f"{f}: median {sorted(t)[reps // 2]:.3f} ms over {reps} runs (onnxruntime {ort.__version__}, 1 thread)")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    files = models(out)
    for f in files:
        print(f"wrote {f}")
    if "--time" in sys.argv:
        reps = int(sys.argv[sys.argv.index("--time") + 1])
        for f in files:
            if f.name.startswith("maxpool"):
                time_ort(f, reps)


if __name__ == "__main__":
    main()
