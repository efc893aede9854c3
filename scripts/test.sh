#!/usr/bin/env bash
# The project's test command: make sure the real data is present, then run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-data.sh
# The fleet test (host/tests/fleet_mqtt.rs) starts its own MQTT broker on loopback: Debian's mosquitto.
# The TLS test (host/tests/fleet_tls.rs) makes its CA with the openssl command (scripts/fleet-ca.sh).
if ! [ -x /usr/sbin/mosquitto ] || ! command -v mosquitto_passwd >/dev/null || ! command -v openssl >/dev/null; then
  echo "== installing mosquitto and openssl (Debian packages) for the fleet tests" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq mosquitto openssl >/dev/null
fi
cargo test --workspace "$@"
# The frozen third-party backbone (ResNet-50 in tract, ~1.5 min on two cores) is #[ignore]d in the plain
# `cargo test`; the project's test command runs it too (--workspace keeps the build shared with the run above).
cargo test --workspace --test onnx_backbone "$@" -- --ignored
# A real external client checks the files the ONNX round-trip test exported (onnx.checker, onnxruntime outputs
# against ours on real test images; installs onnx/onnxruntime/numpy from PyPI into .venv-onnx when missing).
python3 scripts/check-onnx.py out/onnx-roundtrip/exported.onnx out/onnx-roundtrip/exported-ref.json \
  out/onnx-roundtrip/reexported.onnx out/onnx-roundtrip/reexported-ref.json
# The second prefix engine (issue 31): onnxruntime through `ort`, loading the library of the onnxruntime wheel that
# check-onnx.py just installed into .venv-onnx (nothing is downloaded at build time). --workspace keeps the
# dependencies' features those of the build above (a -p subset rebuilt tract), so only the workspace's libraries
# are rebuilt with the feature; the test compares onnxruntime's features with tract's and across thread counts.
ORT_LIB=$(ls .venv-onnx/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1* 2>/dev/null | head -n 1 || true)
if [ -z "$ORT_LIB" ]; then
  echo "scripts/test.sh: onnxruntime's library is missing from .venv-onnx (scripts/check-onnx.py installs it)" >&2
  exit 1
fi
ORT_DYLIB_PATH="$PWD/$ORT_LIB" cargo test --workspace --features edgelearn-onnx/onnxruntime --lib "$@" -- onnxruntime_engine
