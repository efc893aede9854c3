#!/usr/bin/env python3
"""Check exported ONNX files with a real external client: the `onnx` checker and onnxruntime.

Usage:
    scripts/check-onnx.py MODEL.onnx REFERENCE.json [MODEL.onnx REFERENCE.json ...]
    scripts/check-onnx.py --check-only MODEL.onnx [MODEL.onnx ...]

For every MODEL the script runs `onnx.checker.check_model(full_check=True)` (with shape inference), then
loads it in onnxruntime (CPU), feeds the input batch stored in REFERENCE (written by `host onnx-reference` or
`host device-learn --reference`: real test images and our outputs for them) and compares every output with
ours: the largest |ours - onnxruntime| / max(1, |ours|) must be <= 1e-4.

When `onnx`, `onnxruntime` or `numpy` cannot be imported, the script re-runs itself inside the virtual
environment `.venv-onnx` at the repository root, creating it and installing the three packages from PyPI
(`pip install onnx onnxruntime numpy`) when it is missing. Exit status 0 when every file passes, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOLERANCE = 1e-4
REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-onnx"
PACKAGES = ["onnx", "onnxruntime", "numpy"]


def ensure_packages(script: Path | None = None) -> None:
    """Import the checkers, or re-exec `script` (default: this one) in .venv-onnx (created on first use)."""
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if os.environ.get("CHECK_ONNX_IN_VENV") == "1":
        sys.exit(f"check-onnx: {', '.join(PACKAGES)} still not importable inside {VENV}")
    if not python.exists():
        print(f"check-onnx: creating {VENV} and installing {' '.join(PACKAGES)} from PyPI", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import onnx, onnxruntime, numpy"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES], check=True
        )
    env = dict(os.environ, CHECK_ONNX_IN_VENV="1")
    script = script or Path(__file__).resolve()
    os.execve(str(python), [str(python), str(script), *sys.argv[1:]], env)


def check_model(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    print(
        f"{path}: onnx.checker ok (IR {model.ir_version}, opset {opsets}, {len(model.graph.node)} nodes, "
        f"{len(model.graph.initializer)} initializers, onnx {onnx.__version__})"
    )


def compare(path: Path, ref_path: Path) -> float:
    import numpy as np
    import onnxruntime as ort

    ref = json.loads(ref_path.read_text())
    x = np.asarray(ref["input"], dtype=np.float32).reshape(ref["input_shape"])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = [o["name"] for o in ref["outputs"]]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise SystemExit(f"{path}: outputs {missing} of the reference are not in the model ({names})")
    got = dict(zip(wanted, sess.run(wanted, {ref["input_name"]: x})))
    worst = 0.0
    for o in ref["outputs"]:
        ours = np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
        theirs = got[o["name"]]
        if theirs.shape != ours.shape:
            raise SystemExit(f"{path}: output {o['name']} has shape {theirs.shape}, ours {ours.shape}")
        diff = float(np.max(np.abs(theirs - ours) / np.maximum(1.0, np.abs(ours)))) if ours.size else 0.0
        worst = max(worst, diff)
        agree = float(np.mean(np.argmax(theirs, axis=-1) == np.argmax(ours, axis=-1))) if ours.ndim == 2 else 1.0
        print(
            f"  {o['name']} {list(ours.shape)}: max relative difference {diff:.2e}, "
            f"same argmax on {100 * agree:.1f} % of {x.shape[0]} images"
        )
    status = "ok" if worst <= TOLERANCE else "FAILED"
    print(
        f"{path}: onnxruntime {ort.__version__} vs {ref['source']}: max difference {worst:.2e} "
        f"(tolerance {TOLERANCE:g}) {status}"
    )
    return worst


def main() -> int:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    ensure_packages()
    check_only = args[0] == "--check-only"
    if check_only:
        args = args[1:]
        pairs = [(Path(a), None) for a in args]
    else:
        if len(args) % 2:
            print("check-onnx: expected MODEL.onnx REFERENCE.json pairs", file=sys.stderr)
            return 2
        pairs = [(Path(args[i]), Path(args[i + 1])) for i in range(0, len(args), 2)]
    failed = 0
    for model, ref in pairs:
        try:
            check_model(model)
            if ref is not None and compare(model, ref) > TOLERANCE:
                failed += 1
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001 - report any checker/runtime failure as a failed file
            print(f"{model}: FAILED: {type(e).__name__}: {e}")
            failed += 1
    print(f"check-onnx: {len(pairs) - failed} of {len(pairs)} file(s) passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
