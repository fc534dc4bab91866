#!/usr/bin/env bash
# The main job, from a fresh machine: set up the environment, write scikit-learn's digits
# as an image dataset, train a Rev-ViT on it with reversible backprop, test the checkpoint.
#   bash tools/run_digits.sh [CONFIG]   (default configs/revvit/revvit-tiny_1xb64_digits.py;
#                                        configs/revmvit/revmvit-tiny_1xb64_digits.py: Rev-MViT)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/revvit/revvit-tiny_1xb64_digits.py}
WORK_DIR=work_dirs/$(basename "$CONFIG" .py)

bash tools/setup_env.sh
.venv/bin/python tools/dataset_converters/prepare_digits.py --out data/digits
mkdir -p "$WORK_DIR"
.venv/bin/python tools/train.py "$CONFIG" --work-dir "$WORK_DIR" 2>&1 | tee "$WORK_DIR/train.log"
CHECKPOINT=$(cat "$WORK_DIR/last_checkpoint")
.venv/bin/python tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR" \
  --out "$WORK_DIR/test_metrics.json" --out-item metrics
echo "Checkpoint: $CHECKPOINT"
echo "Test accuracy: $(.venv/bin/python -c "import json, sys; print(json.load(open(sys.argv[1]))['accuracy/top1'])" "$WORK_DIR/test_metrics.json") %"
grep -o 'Peak training memory: .*' "$WORK_DIR/train.log" | tail -1
