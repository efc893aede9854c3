#!/usr/bin/env bash
# Deploy the firmware to a board over ssh: the binary, the board profile, the models and a systemd unit, then
# (re)start the service.
#
#   bash scripts/deploy.sh BOARD HOST [--dry-run] [--binary PATH] [--prefix DIR]
#
#   BOARD       a profile name (jetson-nano-4gb) or file (boards/jetson-nano-4gb.toml)
#   HOST        ssh destination, e.g. ubuntu@jetson.local; that user needs sudo on the board
#   --dry-run   print every step (commands and the rendered unit) without executing any; the local read-only
#               checks (files present, glibc of the binary vs the profile) still run
#   --binary    the firmware binary (default: target/<profile target>/release/firmware, as built by
#               scripts/cross-build.sh --board BOARD)
#   --prefix    install folder on the board (default /opt/edgelearn)
#   SSH_OPTS    extra options for ssh and scp, e.g. SSH_OPTS="-o Port=2222 -i ~/.ssh/jetson"
#
# On the board: PREFIX/bin/firmware, PREFIX/boards/BOARD.toml, PREFIX/models/*.onnx (models/*.onnx of this
# repository; skipped with a note when there are none), /etc/systemd/system/edgelearn.service (from
# scripts/edgelearn.service), learner state in /var/lib/edgelearn (kept across deployments). The new binary must
# start (`firmware --version`) on the board before anything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'deploy: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

dry=0
binary=""
prefix=/opt/edgelearn
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --binary) [[ $# -ge 2 ]] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --prefix) [[ $# -ge 2 ]] || die "--prefix needs a folder"; prefix=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[[ ${#positional[@]} -eq 2 ]] || { usage >&2; die "need BOARD and HOST"; }
board_arg=${positional[0]}
host=${positional[1]}
[[ "$prefix" == /* && "$prefix" != *[[:space:]\'\"\\]* ]] || die "--prefix must be an absolute path without spaces or quotes"
[[ "$host" != -* ]] || die "HOST '$host' looks like an option"

# --- the board profile -------------------------------------------------------------------------------------------
if [[ -f "$board_arg" ]]; then board_file=$board_arg; else board_file="boards/$board_arg.toml"; fi
[[ -f "$board_file" ]] || die "no board profile '$board_arg' (known: $(ls boards/*.toml 2>/dev/null | xargs -n1 basename | sed 's/\.toml$//' | paste -sd' ' -))"
field() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\([^\"]*\)\".*/\1/p" "$board_file" | head -n1; }
board=$(field name)
target=$(field target)
[[ "$board" =~ ^[A-Za-z0-9._-]+$ ]] || die "$board_file: name must be letters, digits, '.', '_' or '-', found '$board'"
[[ -n "$target" ]] || die "$board_file has no target"
binary=${binary:-target/$target/release/firmware}

echo "deploy: board $board ($board_file, $target, glibc <= $(field glibc_max)) to $host:$prefix$([[ $dry -eq 1 ]] && echo ' [dry run]')"

# --- local checks --------------------------------------------------------------------------------------------------
if [[ -f "$binary" ]]; then
  bash scripts/check-glibc.sh "$binary" "$board_file"
elif [[ $dry -eq 1 ]]; then
  echo "deploy: note: $binary does not exist yet (bash scripts/cross-build.sh --board $board_file builds it)"
else
  die "$binary not found: build it with bash scripts/cross-build.sh --board $board_file"
fi
shopt -s nullglob
models=(models/*.onnx)
shopt -u nullglob
if [[ ${#models[@]} -eq 0 ]]; then
  echo "deploy: note: no models/*.onnx in this repository, skipping the model (the board keeps what it has)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unit=$tmp/edgelearn.service
sed -e "s|@PREFIX@|$prefix|g" -e "s|@BOARD@|$board|g" scripts/edgelearn.service >"$unit"
if [[ $dry -eq 1 ]]; then
  echo "deploy: rendered unit (scripts/edgelearn.service):"
  sed 's/^/    | /' "$unit"
fi

# --- the steps on the board ----------------------------------------------------------------------------------------
read -r -a ssh_opts <<<"${SSH_OPTS:-}"
stage=/tmp/edgelearn-deploy
step=0
# Shell-quote one word for display: plain words as they are, others in single quotes.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:@=+,-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
run() {
  step=$((step + 1))
  local line="" word
  for word in "$@"; do line+="${line:+ }$(quote "$word")"; done
  printf 'deploy: step %d: %s\n' "$step" "$line"
  [[ $dry -eq 1 ]] || "$@"
}
remote() { run ssh "${ssh_opts[@]}" "$host" "$1"; }

remote "rm -rf $stage && mkdir -p $stage/models"
run scp -q "${ssh_opts[@]}" "$binary" "$host:$stage/firmware"
run scp -q "${ssh_opts[@]}" "$board_file" "$host:$stage/$board.toml"
run scp -q "${ssh_opts[@]}" "$unit" "$host:$stage/edgelearn.service"
if [[ ${#models[@]} -gt 0 ]]; then
  run scp -q "${ssh_opts[@]}" "${models[@]}" "$host:$stage/models/"
fi
# The binary must start on the board (glibc, architecture) before anything is replaced.
remote "chmod 755 $stage/firmware && $stage/firmware --version"
install_cmd="sudo install -d -m 755 $prefix/bin $prefix/boards $prefix/models"
install_cmd+=" && sudo install -m 755 $stage/firmware $prefix/bin/firmware"
install_cmd+=" && sudo install -m 644 $stage/$board.toml $prefix/boards/$board.toml"
if [[ ${#models[@]} -gt 0 ]]; then
  install_cmd+=" && sudo install -m 644 $stage/models/*.onnx $prefix/models/"
fi
install_cmd+=" && sudo install -m 644 $stage/edgelearn.service /etc/systemd/system/edgelearn.service"
remote "$install_cmd"
remote "sudo systemctl daemon-reload && sudo systemctl enable edgelearn.service && sudo systemctl restart edgelearn.service"
remote "rm -rf $stage; systemctl --no-pager --lines=10 status edgelearn.service || true"
if [[ $dry -eq 1 ]]; then
  echo "deploy: dry run: $step steps printed, nothing executed on $host"
else
  echo "deploy: $board deployed to $host ($prefix), service edgelearn restarted"
fi
