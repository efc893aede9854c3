#!/usr/bin/env bash
# Write the seed-* files of the fuzz targets fleet_model, photo_decode and profile_parse (issue 32) into
# fuzz/corpus/. The other targets' seeds are written by #[ignore]d tests in firmware (write_fuzz_seeds).
#
#   bash fuzz/seeds/seeds.sh
#
# - fleet_model, photo_decode: fuzz/seeds/write_seeds.rs (built with the fuzz build's flags by scripts/fuzz.sh),
#   from the fleet fixture and from MNIST's test images in data/mnist (scripts/fetch-data.sh);
# - photo_decode: three real 16×16 images from CPython's test suite (JFIF and bare JPEG, palette PNG);
# - profile_parse: the shipped board profiles, boards/*.toml.
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus=fuzz/corpus

# shellcheck source=../../scripts/fuzz.sh
source scripts/fuzz.sh --build write_seeds
"$fuzz_bin" "${EDGELEARN_DATA:-data}/mnist" "$corpus"

# Three small real images made by others, in encodings the image crate does not write: CPython's test images
# (16×16: a JFIF JPEG, a bare JPEG without JFIF header, a palette PNG), when this machine's Python has them.
imghdr=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')/test/imghdrdata
if [[ -d "$imghdr" ]]; then
  for f in python.jpg python-raw.jpg python.png; do
    cp "$imghdr/$f" "$corpus/photo_decode/seed-cpython-$f"
  done
fi

for f in boards/*.toml; do
  cp "$f" "$corpus/profile_parse/seed-$(basename "$f")"
done
ls -l "$corpus/fleet_model" "$corpus/photo_decode" "$corpus/profile_parse"
