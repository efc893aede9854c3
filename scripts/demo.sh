#!/usr/bin/env bash
# The main job on a fresh machine: fetch real data if missing, train a base model, then simulate the device
# learner on a Split-MNIST stream and print the accuracy matrix and metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-data.sh
HOST="cargo run --release --quiet -p host --"
$HOST train --dataset mnist --model mlp:256,256 --epochs 2 --out out/demo/base-model.json
$HOST simulate --stream split-mnist --method finetune --seeds 0 --out out/demo
