#!/usr/bin/env bash
# Build a fuzz target of fuzz/ and run it for a fixed number of executions over its checked-in corpus.
#
#   bash scripts/fuzz.sh TARGET RUNS        e.g.  bash scripts/fuzz.sh state_decode 20000
#
# fuzz/ has the cargo-fuzz layout (`cargo fuzz run TARGET` works where cargo-fuzz is installed), but this script
# needs only cargo: it builds with the flags cargo-fuzz uses (SanitizerCoverage for libFuzzer, AddressSanitizer,
# debug assertions, overflow checks) on the machine's one toolchain, with RUSTC_BOOTSTRAP=1 to allow the
# `-Zsanitizer` flag on stable. FUZZ_SANITIZER=none builds without ASan. libFuzzer writes the inputs it finds to
# a scratch corpus under target/, never into the checked-in one; a crash is saved as target/fuzz/artifacts/... and
# fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: fuzz.sh TARGET RUNS}
runs=${2:?usage: fuzz.sh TARGET RUNS}
seeds="fuzz/corpus/$target"
[[ -f "fuzz/fuzz_targets/$target.rs" ]] || { echo "fuzz.sh: no target fuzz/fuzz_targets/$target.rs" >&2; exit 2; }
[[ -d "$seeds" ]] || { echo "fuzz.sh: no corpus $seeds" >&2; exit 2; }

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

echo "== fuzz $target ($runs runs)"
start=$(date +%s)
# --target keeps these flags off build scripts and proc-macros (as cargo-fuzz does).
RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" CARGO_TARGET_DIR="$out" \
  cargo build --release --manifest-path fuzz/Cargo.toml --target "$host" --bin "$target"
built=$(date +%s)

scratch="$out/corpus/$target"
artifacts="$out/artifacts/$target/"
mkdir -p "$scratch" "$artifacts"
"$out/$host/release/$target" -runs="$runs" -seed=1 -rss_limit_mb=1024 -malloc_limit_mb=128 \
  -artifact_prefix="$artifacts" -print_final_stats=1 "$scratch" "$seeds"
echo "fuzz.sh: $target: $runs runs without a crash (build $((built - start)) s, run $(($(date +%s) - built)) s)"
