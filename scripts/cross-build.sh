#!/usr/bin/env bash
# Cross-compile the firmware for aarch64 Linux (Jetson-class boards) and run its test suite under qemu.
#
#   bash scripts/cross-build.sh [--glibc X.Y | --board boards/NAME.toml] [--no-test] [--no-install]
#
# Without options: installs what is missing (Debian/Ubuntu packages gcc-aarch64-linux-gnu, libc6-dev-arm64-cross,
# qemu-user; the rustup target aarch64-unknown-linux-gnu), builds
#   target/aarch64-unknown-linux-gnu/release/firmware
# with aarch64-linux-gnu-gcc as the linker (.cargo/config.toml), then runs the firmware test suite (unit tests of
# the library, its layer crates and the binary, and the doctests) for aarch64 through qemu-aarch64 and prints the
# test count.
# The tests use the release profile, so the binary and the tests share one build of the dependencies.
#
# A binary linked on Debian 12 needs glibc 2.36 and does not start on JetPack 4/5/6 (glibc 2.27/2.31/2.35).
#   --glibc X.Y   build and test with cargo-zigbuild against glibc X.Y instead (installs cargo-zigbuild and
#                 zig from PyPI into .venv-cross/ when missing); the binary then starts on any glibc >= X.Y
#   --board FILE  the same with X.Y = the board profile's glibc_max, then checks the binary against the profile
#   --no-test     build only
#   --no-install  fail instead of installing anything
#
# Environment: CARGO_TARGET_DIR as for cargo; CROSS_PIP_SPEC overrides the PyPI packages installed for --glibc.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
PIP_SPEC=${CROSS_PIP_SPEC:-"cargo-zigbuild==0.24.0 ziglang==0.17.1"}
glibc=""
board=""
run_tests=1
install=1

log() { printf 'cross-build: %s\n' "$*"; }
die() { printf 'cross-build: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --glibc) [[ $# -ge 2 ]] || die "--glibc needs a version (e.g. 2.31)"; glibc=$2; shift 2 ;;
    --board) [[ $# -ge 2 ]] || die "--board needs a profile (e.g. boards/jetson-nano-4gb.toml)"; board=$2; shift 2 ;;
    --no-test) run_tests=0; shift ;;
    --no-install) install=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

if [[ -n "$board" ]]; then
  [[ -f "$board" ]] || die "board profile '$board' not found"
  glibc=$(sed -n 's/^[[:space:]]*glibc_max[[:space:]]*=[[:space:]]*"\([0-9.]*\)".*/\1/p' "$board" | head -n1)
  [[ -n "$glibc" ]] || die "$board has no glibc_max = \"X.Y\""
  btarget=$(sed -n 's/^[[:space:]]*target[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$board" | head -n1)
  [[ "$btarget" == "$TARGET" ]] || die "$board targets '$btarget', this script builds $TARGET"
fi
if [[ -n "$glibc" && ! "$glibc" =~ ^2\.[0-9]+$ ]]; then
  die "glibc version '$glibc' is not of the form 2.N"
fi

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@";
  elif command -v sudo >/dev/null; then sudo "$@";
  else die "need root (or sudo) to run: $*"; fi
}

# --- system packages: cross linker, aarch64 glibc, qemu user-mode emulator --------------------------------------
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[[ -e "$SYSROOT/lib/libc.so" ]] || missing+=(libc6-dev-arm64-cross)
if ! command -v qemu-aarch64 >/dev/null && ! command -v qemu-aarch64-static >/dev/null; then
  missing+=(qemu-user)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  [[ $install -eq 1 ]] || die "missing Debian packages: ${missing[*]}"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >/dev/null; then
    # Some releases only ship the static emulator.
    log "retrying with qemu-user-static"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]/#qemu-user/qemu-user-static}" >/dev/null
  fi
fi
# .cargo/config.toml names qemu-aarch64; with only the static emulator, point cargo at that one.
if ! command -v qemu-aarch64 >/dev/null; then
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L $SYSROOT"
fi

# --- Rust target ---------------------------------------------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  [[ $install -eq 1 ]] || die "rust target $TARGET not installed (rustup target add $TARGET)"
  command -v rustup >/dev/null || die "rustup is needed to add the $TARGET standard library"
  log "rustup target add $TARGET"
  rustup target add "$TARGET" >/dev/null
fi

# --- cargo-zigbuild + zig for an older glibc ----------------------------------------------------------------------
cargo_build=(cargo build)
cargo_test=(cargo test)
triple=$TARGET
if [[ -n "$glibc" ]]; then
  venv=.venv-cross
  [[ -x "$venv/bin/cargo-zigbuild" ]] && export PATH="$PWD/$venv/bin:$PATH"
  if ! command -v cargo-zigbuild >/dev/null; then
    [[ $install -eq 1 ]] || die "cargo-zigbuild not found (pip install $PIP_SPEC)"
    log "installing $PIP_SPEC into $venv/"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --disable-pip-version-check $PIP_SPEC
    export PATH="$PWD/$venv/bin:$PATH"
  fi
  command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild still not found after installing"
  cargo_build=(cargo-zigbuild zigbuild)
  cargo_test=(cargo-zigbuild test)
  triple="$TARGET.$glibc"
  log "linking with zig against glibc $glibc ($(cargo-zigbuild --version))"
fi

# --- build ---------------------------------------------------------------------------------------------------------
bin="${CARGO_TARGET_DIR:-target}/$TARGET/release/firmware"
start=$SECONDS
log "building the firmware (release) for $triple"
"${cargo_build[@]}" --release -p firmware --bin firmware --target "$triple"
[[ -x "$bin" ]] || die "$bin was not produced"
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
aarch64-linux-gnu-strip -o "$stripped" "$bin"
glibc_needed=$(readelf -W -V "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
log "built $bin in $((SECONDS - start)) s: $(stat -c %s "$bin") bytes, $(stat -c %s "$stripped") stripped;" \
  "needs glibc ${glibc_needed:-?}"
if [[ -n "$board" ]]; then
  bash scripts/check-glibc.sh "$bin" "$board"
fi

# --- tests under qemu ----------------------------------------------------------------------------------------------
if [[ $run_tests -eq 1 ]]; then
  firmware_crates=(-p firmware)
  for c in core store learn onnx protocol; do firmware_crates+=(-p "edgelearn-$c"); done
  start=$SECONDS
  out=$(mktemp)
  trap 'rm -f "$stripped" "$out"' EXIT
  log "running the firmware tests for $TARGET under qemu (lib, bin, doctests)"
  set +e
  # The firmware and the layer crates it is built from (firmware/crates/): their unit tests and doctests.
  "${cargo_test[@]}" --release "${firmware_crates[@]}" --target "$triple" 2>&1 | tee "$out"
  status=${PIPESTATUS[0]}
  set -e
  read -r passed failed < <(grep -E '^test result: ' "$out" |
    sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/' | awk '{p += $1; f += $2} END {print p + 0, f + 0}')
  log "aarch64 tests under qemu took $((SECONDS - start)) s"
  echo "aarch64: $passed passed, $failed failed"
  [[ $status -eq 0 ]] || die "aarch64 tests failed (cargo exit $status)"
  [[ $passed -gt 0 ]] || die "no aarch64 test ran"
fi
