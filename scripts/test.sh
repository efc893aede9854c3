#!/usr/bin/env bash
# The project's test command: make sure the real data is present, then run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-data.sh
cargo test --workspace "$@"
