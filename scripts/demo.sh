#!/usr/bin/env bash
# The main job on a fresh machine, the product's whole path on real MNIST:
#   1. host: pre-train a small CNN on digits 0-3 and export it as ONNX (our Rust exporter, checked by reloading);
#   2. device code: load that ONNX file, run its convolutional trunk as a frozen prefix in tract and
#      a) the product's field mode (class-incremental, the headline): the board's learner (boards/jetson-nano-4gb.toml,
#         the device's default method firmware::method::FIELD_METHOD), provisioned with the base digits 0-3, learns
#         4/5, 6/7, 8/9 into one growing head and is scored over all digits seen with no task id;
#         then the same from 10 photos per new digit (with the jittered copies of firmware::augment);
#      b) for comparison with papers, task-incremental: the same three tasks with one new head each and GPM+BECAME,
#         the accuracy matrix and alpha per task, and the adapted model re-exported as ONNX;
#   3. the camera board (`host camera`): EfficientNet-Lite0 as the frozen backbone, the board's learner taught the
#      eight tuxpaint stamp categories two at a time from K = 5, 10, 20 colour photos each, scored over every
#      category seen with no task id next to LDA/OAS on the same features, its model exported as one ONNX file;
#      EDGELEARN_CAMERA_SHOTS=5 runs one K (CI does, for time);
#   4. an external client (onnx.checker + onnxruntime, scripts/check-onnx.py) checks the re-exported files — the
#      field's class-incremental model (frozen prefix, trained layers, one head over all ten digits) and the
#      task-incremental one — and compares their outputs with the device's on real test images.
#
# EDGELEARN_PROFILE=dev runs the same steps with the dev build (CI does, to reuse the build of the test run;
# every package is built at opt-level 2 there, and the results are the same numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-data.sh
profile=${EDGELEARN_PROFILE:-release}
case "$profile" in
  release) dir=release ;;
  dev) dir=debug ;;
  *) echo "demo.sh: EDGELEARN_PROFILE must be release or dev, not '$profile'" >&2; exit 2 ;;
esac
if [[ "$profile" == dev ]]; then
  # The binaries of the README's test build (`cargo test` builds host for the integration tests): a `cargo build`
  # would unify the dependencies' features without the dev-dependencies and rebuild firmware and host (1.5 to
  # 2.5 minutes of every CI run, issue 19). After the test build this is a no-op.
  cargo test --workspace --no-run --quiet
else
  cargo build --profile "$profile" --quiet -p host
fi
HOST="${CARGO_TARGET_DIR:-target}/$dir/host"
out=out/demo
mkdir -p "$out"
echo "== host: pre-train on digits 0-3 and export ONNX"
$HOST pretrain --dataset mnist --classes 0,1,2,3 --model cnn --epochs 2 --seed 0 \
  --params "$out/base-model.json" --out "$out/base-model.onnx"
echo "== device: load the ONNX file, learn digits 4/5, 6/7, 8/9 (class-incremental field run first), re-export"
$HOST device-learn --model "$out/base-model.onnx" --cut last:2 --base-classes 0,1,2,3 --groups "4,5;6,7;8,9" \
  --method gpm+became --out "$out/adapted.onnx" --reference "$out/adapted-ref.json" --report-dir "$out"
echo "== device, field mode from a handful of photos: the same board taught 4/5, 6/7, 8/9 from 10 photos per digit"
echo "   (each followed by the jittered copies its profile's [augment] table asks for; firmware::augment)"
$HOST device-learn --model "$out/base-model.onnx" --cut last:2 --base-classes 0,1,2,3 --groups "4,5;6,7;8,9" \
  --field-only --shots 10 --report-dir "$out" --field-out "$out/field.onnx" --field-reference "$out/field-ref.json"
echo "== check the re-exported models with onnx.checker and onnxruntime: the field's (one head over all ten digits)"
echo "   and the task-incremental one"
python3 scripts/check-onnx.py "$out/field.onnx" "$out/field-ref.json" "$out/adapted.onnx" "$out/adapted-ref.json"
echo "== camera board: EfficientNet-Lite0 frozen, colour photos of eight tuxpaint stamp categories learned two at a"
echo "   time from K photos each (with the board's jittered copies), scored over every category seen, no task id,"
echo "   beside LDA/OAS on the same features taught the same photos; the adapted model exported and checked"
$HOST camera --shots "${EDGELEARN_CAMERA_SHOTS:-5,10,20}" --out "$out/camera.onnx" --reference "$out/camera-ref.json"
python3 scripts/check-onnx.py "$out/camera.onnx" "$out/camera-ref.json"
