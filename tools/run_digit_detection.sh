#!/usr/bin/env bash
# The detection job, from a fresh machine: set up the environment, train the digits
# classifier of the main job if its checkpoint is missing, write the built-in digit
# detection task, fine-tune Mask R-CNN from the classifier's backbone, test it and draw
# its predictions on a validation image.
#   bash tools/run_digit_detection.sh [revvit|revmvit] [train.py options, e.g.
#        --cfg-options custom_hooks.0.reversible=False for ordinary backprop]
# WORK_DIR (default work_dirs/<config name>) sets where checkpoints and logs go.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-revvit}
shift || true
case $MODEL in
  revvit) CONFIG=configs/detection/digits/mask-rcnn_revvit-tiny_simplefpn_digits.py
          CLASSIFIER=configs/revvit/revvit-tiny_1xb64_digits.py ;;
  revmvit) CONFIG=configs/detection/digits/mask-rcnn_revmvit-tiny_fpn_digits.py
           CLASSIFIER=configs/revmvit/revmvit-tiny_1xb64_digits.py ;;
  *) echo "usage: $0 [revvit|revmvit] [train.py options]" >&2; exit 2 ;;
esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the loader's worker takes the other core
WORK_DIR=${WORK_DIR:-work_dirs/$(basename "$CONFIG" .py)}

bash tools/setup_env.sh
CLASSIFIER_CKPT=work_dirs/$(basename "$CLASSIFIER" .py)/epoch_50.pth
[[ -f $CLASSIFIER_CKPT ]] || bash tools/run_digits.sh "$CLASSIFIER"
.venv/bin/python tools/dataset_converters/prepare_digit_detection.py --out data/digit_detection
source tools/job.sh
train_and_test "$CONFIG" "$WORK_DIR" "$@"
.venv/bin/python tools/analysis_tools/predict_image.py "$CONFIG" "$CHECKPOINT" \
  data/digit_detection/val/00000.jpg "$WORK_DIR/prediction.jpg"
