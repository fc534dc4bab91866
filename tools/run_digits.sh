#!/usr/bin/env bash
# The main job, from a fresh machine: set up the environment, write scikit-learn's digits
# as an image dataset, train a Rev-ViT on it with reversible backprop, test the checkpoint.
#   bash tools/run_digits.sh [CONFIG]   (default configs/revvit/revvit-tiny_1xb64_digits.py;
#                                        configs/revmvit/revmvit-tiny_1xb64_digits.py: Rev-MViT)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/revvit/revvit-tiny_1xb64_digits.py}
# one compute thread: the data loader's worker takes the second core (and two threads
# slow down badly on a machine that is busy with anything else)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
WORK_DIR=work_dirs/$(basename "$CONFIG" .py)

bash tools/setup_env.sh
.venv/bin/python tools/dataset_converters/prepare_digits.py --out data/digits
source tools/job.sh
train_and_test "$CONFIG" "$WORK_DIR"
