#!/usr/bin/env bash
# The fleet demo (issue 18): mosquitto on loopback, the merger and N boards (real daemon processes) that learn
# their own new MNIST digits from their inboxes, send their updates and adopt the fleet model; then the fleet
# model's accuracy over all ten digits (no task id) next to each board alone, the plain parameter average of the
# same updates and joint training. Arguments go to `host fleet demo` (e.g. --devices 8 --seed 1).
#
#   bash scripts/fleet-demo.sh [--devices N] [--seed S] [--board boards/X.toml] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-data.sh
if ! [ -x /usr/sbin/mosquitto ] || ! command -v mosquitto_passwd >/dev/null; then
  echo "== installing mosquitto (Debian package) for the fleet's broker" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq mosquitto >/dev/null
fi
# The firmware binary beside host, with the fleet's MQTT side.
cargo build --release -p host -p firmware --features firmware/fleet-mqtt
target/release/host fleet demo "$@"
