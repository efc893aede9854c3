#!/usr/bin/env bash
# Build a fuzz target of fuzz/ and run it for a fixed number of executions over its checked-in corpus.
#
#   bash scripts/fuzz.sh TARGET RUNS        e.g.  bash scripts/fuzz.sh state_decode 20000
#   source scripts/fuzz.sh --build BIN      build one binary of fuzz/Cargo.toml only (scripts/fuzz-long.sh,
#                                           fuzz/seeds/seeds.sh); sets fuzz_bin and fuzz_limits
#
# fuzz/ has the cargo-fuzz layout (`cargo fuzz run TARGET` works where cargo-fuzz is installed), but this script
# needs only cargo: it builds with the flags cargo-fuzz uses (SanitizerCoverage for libFuzzer, AddressSanitizer,
# debug assertions, overflow checks) on the machine's one toolchain, with RUSTC_BOOTSTRAP=1 to allow the
# `-Zsanitizer` flag on stable. FUZZ_SANITIZER=none builds without ASan. libFuzzer writes the inputs it finds to
# a scratch corpus under target/, never into the checked-in one; a crash is saved as target/fuzz/artifacts/... and
# fails the script.
#
# Memory: every input runs under the smallest Jetson board's budgets (boards/jetson-nano-4gb.toml): no single
# allocation over its largest single budget (workspace 160 MiB since session 35; state_file 128 MiB), and the process's RSS at most its
# own footprint before any input (the instrumented binary, ASan's shadow, libFuzzer's tables: 100-135 MB,
# measured by running the empty input once) plus the learner's RAM budget (params + bases + fisher + workspace +
# replay = 324 MiB; 292 MiB before session 35); over either is an out-of-memory crash. (boards/tiny.toml, a 2.5 MiB profile for budget tests
# on which learning is refused, is not used: libFuzzer keeps its corpus in memory, megabytes over a long run.)
# ASan's quarantine of freed memory counts in the RSS, so it is cut from 256 to 16 MiB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzz_build_only=false
if [[ "${1:-}" == --build ]]; then
  fuzz_build_only=true
  shift
fi
target=${1:?usage: fuzz.sh TARGET RUNS | source fuzz.sh --build TARGET}
if ! $fuzz_build_only; then
  [[ -f "fuzz/fuzz_targets/$target.rs" ]] || { echo "fuzz.sh: no target fuzz/fuzz_targets/$target.rs" >&2; exit 2; }
  runs=${2:?usage: fuzz.sh TARGET RUNS}
  seeds="fuzz/corpus/$target"
  [[ -d "$seeds" ]] || { echo "fuzz.sh: no corpus $seeds" >&2; exit 2; }
  echo "== fuzz $target ($runs runs)"
fi

board=boards/jetson-nano-4gb.toml
budget() { awk -v k="$1" '/^\[/ { b = ($0 == "[budget]") } b && $1 == k { print $3 }' "$board"; }
fuzz_board_mb=$((($(budget params) + $(budget bases) + $(budget fisher) + $(budget workspace) + $(budget replay)) >> 20))
fuzz_malloc_mb=$(($(budget workspace) > $(budget state_file) ? $(budget workspace) >> 20 : $(budget state_file) >> 20))
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=16}

host=$(rustc -vV | sed -n 's/^host: //p')
out=target/fuzz
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
if [[ "${FUZZ_SANITIZER:-address}" == address ]]; then
  flags+=" -Zsanitizer=address"
fi

# Pin the dependencies the fuzz crate shares with the workspace to the workspace's lock file (cargo adds
# libfuzzer-sys to it); fuzz/Cargo.lock is therefore not checked in.
cp Cargo.lock fuzz/Cargo.lock

start=$(date +%s)
# The fuzz crate takes only the firmware's layer crates; the targets that need `firmware` itself (the inbox's photo
# decoder) carry `required-features = ["photo"]`.
features=()
if [[ "$target" == photo_decode || "$target" == write_seeds ]]; then
  features=(--features photo)
fi
# --target keeps these flags off build scripts and proc-macros (as cargo-fuzz does).
RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" CARGO_TARGET_DIR="$out" \
  cargo build --release --manifest-path fuzz/Cargo.toml --target "$host" --bin "$target" "${features[@]}"
built=$(date +%s)
fuzz_bin="$out/$host/release/$target"
if [[ -f "fuzz/fuzz_targets/$target.rs" ]]; then
  empty=$(mktemp -d)
  fuzz_base_mb=$("$fuzz_bin" -runs=1 -rss_limit_mb=0 "$empty" 2>&1 | sed -n 's/.*INITED.* rss: \([0-9]*\)Mb.*/\1/p')
  rmdir "$empty"
  fuzz_rss_mb=$((${fuzz_base_mb:?fuzz.sh: no RSS in the empty run of $target} + fuzz_board_mb))
  fuzz_limits=(-rss_limit_mb="$fuzz_rss_mb" -malloc_limit_mb="$fuzz_malloc_mb")
  echo "fuzz.sh: $target: $fuzz_base_mb MB before any input + $fuzz_board_mb MiB (${board#boards/}) = -rss_limit_mb=$fuzz_rss_mb, -malloc_limit_mb=$fuzz_malloc_mb"
fi
if $fuzz_build_only; then
  echo "fuzz.sh: built $fuzz_bin in $((built - start)) s"
  return 0 2>/dev/null || exit 0
fi

scratch="$out/corpus/$target"
artifacts="$out/artifacts/$target/"
mkdir -p "$scratch" "$artifacts"
"$fuzz_bin" -runs="$runs" -seed=1 "${fuzz_limits[@]}" \
  -artifact_prefix="$artifacts" -print_final_stats=1 "$scratch" "$seeds"
echo "fuzz.sh: $target: $runs runs without a crash (build $((built - start)) s, run $(($(date +%s) - built)) s)"
