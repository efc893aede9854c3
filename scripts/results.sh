#!/usr/bin/env bash
# Reproduce docs/results.md: fine-tune, EWC, GPM and GPM+BECAME, 3 seeds, on PMNIST-10, Split-MNIST and
# Split-Fashion-MNIST with the presets' settings. Reports land in out/results/<stream>/.
# Usage: bash scripts/results.sh [stream ...]   (default: split-mnist pmnist split-fmnist)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-data.sh
cargo build --release -q -p host
streams=("$@")
[ ${#streams[@]} -gt 0 ] || streams=(split-mnist pmnist split-fmnist)
for s in "${streams[@]}"; do
  target/release/host simulate --stream "$s" --method finetune,ewc,gpm,gpm+became --seeds 0,1,2 \
    --out "out/results/$s" > "out/results-$s.log" 2> "out/results-$s.err" || { cat "out/results-$s.err"; exit 1; }
  tail -n 8 "out/results-$s.log"
done
