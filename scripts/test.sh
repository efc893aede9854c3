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
