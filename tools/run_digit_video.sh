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
source tools/job.sh
train_and_test "$CONFIG" "$WORK_DIR" "$@"
