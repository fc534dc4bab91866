#!/usr/bin/env bash
# The video job, from a fresh machine: set up the environment, write the built-in moving
# digits (the class is the direction of motion), train a tiny video Rev-MViT with
# reversible backprop through mmaction2, test it and print its accuracy and peak memory.
#   bash tools/run_digit_video.sh [train.py options]
# WORK_DIR (default work_dirs/<config name>) sets where checkpoints and logs go.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=configs/revmvit_video/revmvit-tiny_1xb16-8x1x1_digit-video-rgb.py
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the loader's worker takes the other core
WORK_DIR=${WORK_DIR:-work_dirs/$(basename "$CONFIG" .py)}

bash tools/setup_env.sh
.venv/bin/python tools/dataset_converters/prepare_digit_video.py --out data/digit_video
mkdir -p "$WORK_DIR"
SECONDS=0
.venv/bin/python tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@" 2>&1 | tee "$WORK_DIR/train.log"
TRAIN_TIME=$SECONDS
CHECKPOINT=$(cat "$WORK_DIR/last_checkpoint")
.venv/bin/python tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR" \
  --out "$WORK_DIR/test_metrics.json" --out-item metrics
echo "Checkpoint: $CHECKPOINT (training took $((TRAIN_TIME / 60)) min $((TRAIN_TIME % 60)) s)"
ACCURACY=$(.venv/bin/python -c "import json, sys; print('%.2f' % (100 * json.load(open(sys.argv[1]))['acc/top1']))" "$WORK_DIR/test_metrics.json")
echo "Test accuracy (direction of motion, 4 classes): $ACCURACY %"
grep -o 'Peak training memory: .*' "$WORK_DIR/train.log" | tail -1
