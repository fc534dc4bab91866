# The part the run_digit*.sh jobs share (sourced, after the set-up and the data):
#   train_and_test CONFIG WORK_DIR [train.py options]
# trains CONFIG into WORK_DIR with tools/train.py, tests the last checkpoint with
# tools/test.py and prints the training time, the test metrics and the peak training
# memory. Sets CHECKPOINT to the checkpoint tested.
train_and_test() {
  local config=$1 work_dir=$2
  shift 2
  mkdir -p "$work_dir"
  SECONDS=0
  .venv/bin/python tools/train.py "$config" --work-dir "$work_dir" "$@" 2>&1 | tee "$work_dir/train.log"
  local train_time=$SECONDS
  CHECKPOINT=$(cat "$work_dir/last_checkpoint")
  .venv/bin/python tools/test.py "$config" "$CHECKPOINT" --work-dir "$work_dir" \
    --out "$work_dir/test_metrics.json" --out-item metrics
  echo "Checkpoint: $CHECKPOINT (training took $((train_time / 60)) min $((train_time % 60)) s)"
  .venv/bin/python - "$work_dir/test_metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
if 'accuracy/top1' in m:  # mmpretrain, in %
    print(f"Test accuracy: {m['accuracy/top1']:.2f} %")
if 'acc/top1' in m:  # mmaction2, a fraction
    print(f"Test accuracy: {100 * m['acc/top1']:.2f} %")
if 'coco/bbox_mAP' in m:
    print(f"Box mAP@0.5: {m['coco/bbox_mAP_50']:.3f}  box mAP: {m['coco/bbox_mAP']:.3f}  "
          f"mask mAP@0.5: {m['coco/segm_mAP_50']:.3f}  mask mAP: {m['coco/segm_mAP']:.3f}")
PY
  grep -o 'Peak training memory: .*' "$work_dir/train.log" | tail -1
}
