#!/usr/bin/env bash
# Check that a binary starts on a board: the newest GLIBC_x.y symbol version it needs must not exceed the board
# profile's glibc_max, and its ELF machine must match the profile's target.
#
#   bash scripts/check-glibc.sh BINARY BOARD.toml
#
# Prints the needed version and the symbols that need it. Exit 0 when it fits, 1 when it does not (or the
# architecture differs), 2 for bad arguments. Reads the dynamic symbols with `<arch>-linux-gnu-objdump -T` when
# that binutils is installed, else with `readelf` (which reads any architecture).
set -euo pipefail

die() { printf 'check-glibc: error: %s\n' "$*" >&2; exit 2; }
[[ $# -eq 2 ]] || die "usage: $0 BINARY BOARD.toml"
bin=$1
board=$2
[[ -f "$bin" ]] || die "binary '$bin' not found"
[[ -f "$board" ]] || die "board profile '$board' not found"
command -v readelf >/dev/null || die "readelf (binutils) is required"

field() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\([^\"]*\)\".*/\1/p" "$board" | head -n1; }
max=$(field glibc_max)
target=$(field target)
name=$(field name)
[[ "$max" =~ ^2\.[0-9]+$ ]] || die "$board: glibc_max must be \"2.N\", found '$max'"

machine=$(readelf -h "$bin" 2>/dev/null | sed -n 's/^ *Machine: *//p')
[[ -n "$machine" ]] || die "'$bin' is not an ELF file"
case "$target" in
  aarch64-*) want="AArch64"; objdump=aarch64-linux-gnu-objdump ;;
  x86_64-*) want="Advanced Micro Devices X86-64"; objdump=objdump ;;
  *) die "$board: unsupported target '$target'" ;;
esac
if [[ "$machine" != "$want" ]]; then
  echo "check-glibc: FAIL: $bin is built for $machine, board ${name:-$board} needs $target"
  exit 1
fi

if command -v "$objdump" >/dev/null; then
  syms=$("$objdump" -T "$bin")
  tool="$objdump -T"
else
  syms=$(readelf -W --dyn-syms "$bin")
  tool="readelf --dyn-syms"
fi
# Only undefined symbols are needs; a library's own definitions are not.
syms=$(grep -E '\*UND\*| UND ' <<<"$syms" || true)
versions=$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$syms" | sed 's/^GLIBC_//' | sort -uV || true)
if [[ -z "$versions" ]]; then
  echo "check-glibc: $bin needs no versioned glibc symbol (static?); board ${name:-$board} allows $max: OK"
  exit 0
fi
needed=$(tail -n1 <<<"$versions")
users=$(grep -E "GLIBC_${needed//./\\.}([^0-9.]|$)" <<<"$syms" | awk '{print $NF}' | sort -u | head -n 8 | paste -sd' ' -)
echo "check-glibc: $bin needs GLIBC_$needed (versions used: $(paste -sd' ' - <<<"$versions"); by $tool)"
echo "check-glibc: symbols needing GLIBC_$needed: $users"
newest=$(printf '%s\n%s\n' "$needed" "$max" | sort -V | tail -n1)
if [[ "$newest" == "$max" ]]; then
  echo "check-glibc: OK: board ${name:-$board} has glibc $max >= $needed"
else
  hint=""
  [[ "$want" == "AArch64" ]] && hint="; rebuild with bash scripts/cross-build.sh --board $board (zig, glibc $max)"
  echo "check-glibc: FAIL: board ${name:-$board} has glibc $max < $needed$hint"
  exit 1
fi
