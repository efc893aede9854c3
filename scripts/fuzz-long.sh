#!/usr/bin/env bash
# Run one fuzz target long, minimise its corpus and write a summary (issue 32; results in docs/fuzzing.md).
#
#   bash scripts/fuzz-long.sh TARGET RUNS            e.g.  bash scripts/fuzz-long.sh state_decode 1000000
#   bash scripts/fuzz-long.sh TARGET --minutes M     e.g.  bash scripts/fuzz-long.sh onnx_load --minutes 60
#
# 1. Builds TARGET exactly as scripts/fuzz.sh does (it sources `fuzz.sh --build`: the same flags, ASan, and the
#    same memory limits per input: no allocation over 128 MiB, RSS at most the process's own footprint plus the
#    Jetson Nano's learner RAM budget (324 MiB; 292 MiB before session 35)).
# 2. Runs libFuzzer on one core (no -jobs/-workers) over the checked-in corpus fuzz/corpus/TARGET and a scratch
#    corpus target/fuzz-long/TARGET/corpus that persists between runs, with -timeout=$FUZZ_TIMEOUT (default 20 s)
#    per input. The first crash, timeout or out-of-memory stops the run; its input lands in
#    target/fuzz-long/TARGET/artifacts/.
# 3. Minimises: a fresh folder gets the checked-in seed-* and crash-* files (tests read them by name), then
#    libFuzzer's -set_cover_merge=1 adds a small set of files of both corpora that brings every feature those
#    lack (greedy set cover: smaller than -merge=1, same features); that folder replaces
#    fuzz/corpus/TARGET (review `git status fuzz/corpus` and check it in).
# 4. Writes target/fuzz-long/TARGET-<UTC time>.json and .md (one Markdown table row) and appends the row to
#    target/fuzz-long/summary.md: commit, executions, exec/s, corpus files and bytes, cov and ft from libFuzzer's
#    last status line, crashes, timeouts, OOMs, peak RSS, seconds.
#
# Environment: FUZZ_TIMEOUT (s per input), FUZZ_SEED (libFuzzer -seed, default 0 = random), FUZZ_MAX_LEN
# (-max_len, default libFuzzer's choice from the corpus), FUZZ_NO_MERGE=1 skips step 3.
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: fuzz-long.sh TARGET RUNS | fuzz-long.sh TARGET --minutes M"
target=${1:?$usage}
case "${2:?$usage}" in
  --minutes) budget=(-max_total_time=$((${3:?$usage} * 60))) ; what="${3} minutes" ;;
  *) budget=(-runs="$2") ; what="$2 runs" ;;
esac
[[ -f "fuzz/fuzz_targets/$target.rs" ]] || { echo "fuzz-long.sh: no target fuzz/fuzz_targets/$target.rs" >&2; exit 2; }
seeds="fuzz/corpus/$target"
mkdir -p "$seeds"

# The commit the binary is built from ("-dirty": with uncommitted changes to the code it runs).
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- firmware fuzz/fuzz_targets fuzz/Cargo.toml Cargo.lock || commit+="-dirty"
# shellcheck source=fuzz.sh
source scripts/fuzz.sh --build "$target"

work=target/fuzz-long/$target
stamp=$(date -u +%Y%m%dT%H%M%SZ)
scratch=$work/corpus
artifacts=$work/artifacts/$stamp/
log=$work/$stamp.log
mkdir -p "$scratch" "$artifacts"
opts=(-timeout="${FUZZ_TIMEOUT:-20}" -seed="${FUZZ_SEED:-0}" "${fuzz_limits[@]}" -print_final_stats=1)
[[ -n "${FUZZ_MAX_LEN:-}" ]] && opts+=(-max_len="$FUZZ_MAX_LEN")
cmd=("$fuzz_bin" "${budget[@]}" "${opts[@]}" -artifact_prefix="$artifacts" "$scratch" "$seeds")
echo "== fuzz-long $target ($what, log $log)"
echo "${cmd[*]}"
start=$(date +%s)
status=0
"${cmd[@]}" >"$log" 2>&1 || status=$?
seconds=$(($(date +%s) - start))
tail -n 25 "$log"

stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
execs=$(stat number_of_executed_units)
rate=$(stat average_exec_per_sec)
peak=$(stat peak_rss_mb)
last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
count() { find "$artifacts" -maxdepth 1 -name "$1-*" | wc -l; }
crashes=$(($(count crash) + $(count leak)))
timeouts=$(count timeout)
ooms=$(count oom)

if [[ "${FUZZ_NO_MERGE:-0}" != 1 ]]; then
  min=$work/min-$stamp
  mkdir -p "$min"
  find "$seeds" -maxdepth 1 -type f \( -name 'seed-*' -o -name 'crash-*' \) -exec cp {} "$min/" \;
  if "$fuzz_bin" -set_cover_merge=1 -timeout="${FUZZ_TIMEOUT:-20}" "${fuzz_limits[@]}" "$min" "$seeds" "$scratch" \
    >"$work/$stamp.merge.log" 2>&1 && [[ -n "$(ls -A "$min")" ]]; then
    find "$seeds" -maxdepth 1 -type f -delete
    cp "$min"/* "$seeds/"
    rm -rf "$min"
  else
    echo "fuzz-long.sh: the merge failed (log $work/$stamp.merge.log); fuzz/corpus/$target left as it was" >&2
    status=${status/#0/1}
  fi
fi
files=$(find "$seeds" -maxdepth 1 -type f | wc -l)
bytes=$(find "$seeds" -maxdepth 1 -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')

json=target/fuzz-long/$target-$stamp.json
cat >"$json" <<JSON
{
  "target": "$target",
  "commit": "$commit",
  "started": "$stamp",
  "budget": "$what",
  "command": "${cmd[*]}",
  "executions": ${execs:-0},
  "exec_per_s": ${rate:-0},
  "seconds": $seconds,
  "cov": ${cov:-0},
  "ft": ${ft:-0},
  "corpus_files": $files,
  "corpus_bytes": $bytes,
  "crashes": $crashes,
  "timeouts": $timeouts,
  "ooms": $ooms,
  "peak_rss_mb": ${peak:-0},
  "rss_limit_mb": $fuzz_rss_mb,
  "malloc_limit_mb": $fuzz_malloc_mb,
  "exit_status": $status,
  "log": "$log"
}
JSON
row="| $target | $commit | ${execs:-0} | ${rate:-0} | $seconds | ${cov:-0} | ${ft:-0} | $files / $bytes B | $crashes | $timeouts | $ooms | ${peak:-0} MB |"
echo "$row" >"${json%.json}.md"
if [[ ! -f target/fuzz-long/summary.md ]]; then
  echo "| target | commit | executions | exec/s | seconds | cov | ft | corpus (files / bytes) | crashes | timeouts | OOMs | peak RSS |" >target/fuzz-long/summary.md
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|" >>target/fuzz-long/summary.md
fi
echo "$row" >>target/fuzz-long/summary.md
cat "$json"
if [[ $status -ne 0 ]]; then
  echo "fuzz-long.sh: $target: libFuzzer exited $status; inputs in $artifacts" >&2
  exit "$status"
fi
