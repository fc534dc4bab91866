#!/usr/bin/env bash
# GPU validation of mmrev in one command (issue 20), on a bare GPU machine: the CUDA
# tests, then the benchmark tool on CUDA, with the results in $OUT (six files:
# gpu_validation.{md,json,csv,png,log} and pytest_cuda.xml; the .md is the README table).
#
#   bash tools/analysis_tools/prepare_gpu_validation.sh   # here, once: fills gpu_wheels/
#   bash tools/analysis_tools/gpu_validation.sh           # there, gpu_wheels/ carried along
#   GPU_VALIDATION_DRY_RUN=1 bash tools/analysis_tools/gpu_validation.sh   # CPU dry run
#
# 1. Installs gpu_wheels/ into /tmp/site (pip --no-index); mmrev runs from this tree.
# 2. `pytest -m cuda tests/test_cuda.py`, beside the memory runs (each process measures
#    its own peak allocated memory, so they can share the GPU).
# 3. Training memory at two batch sizes (in parallel): RevViT-S at depth 12, 24 and 48 and
#    RevMViT-B against every case of the tool, RevViT-B and RevViT-L against mmpretrain's
#    ViT and RevVisionTransformer; the report fits memory per image and the largest batch
#    within 16 and 80 GiB.
# 4. Step time at one batch, one run at a time: RevViT-S at depth 12, 24 and 48, RevMViT-B.
# 5. Training throughput of mmrev-rev and of mmpretrain's model, each at its largest batch
#    within 16 GiB (at most 4096): RevViT-S at depth 12 and 48, RevMViT-B, RevViT-B, -L.
# 6. The report (tools/analysis_tools/gpu_validation_report.py).
# Runs that would start after $GPU_VALIDATION_DEADLINE seconds (default 390) are skipped
# and listed as such, so that the whole takes under 8 minutes.
#
# Not run on the GPU: Mask R-CNN (mmdet's detectors need mmcv's compiled ops, RoIAlign and
# NMS, which mmcv-lite lacks) and the video RevMViT (mmaction2 is not carried).
#
# The dry run (GPU_VALIDATION_DRY_RUN=1) runs every step but the install on CPU, with a
# tiny RevViT, one memory, time and throughput run and budgets of a few GiB of resident
# memory; tests/test_gpu_validation.py runs it. OUT defaults to work_dirs/gpu_validation.
set -uo pipefail
cd "$(dirname "$0")/../.."

DRY_RUN=${GPU_VALIDATION_DRY_RUN:-0}
DEADLINE=${GPU_VALIDATION_DEADLINE:-390}
RUN_TIMEOUT=180  # seconds, for the tests and for each run: nothing hangs the whole
OUT=${OUT:-work_dirs/gpu_validation}
BENCH=tools/analysis_tools/benchmark_memory_speed.py
REPORT=tools/analysis_tools/gpu_validation_report.py
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_validation.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
: >"$WORK/runs.tsv"
exec > >(tee "$OUT/gpu_validation.log") 2>&1
# Many short processes import the same modules: keep their bytecode, also where the
# environment turns that off.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/mmrev/pycache}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} MPLBACKEND=Agg PYTHONUNBUFFERED=1

declare -A ARGS CASES  # per run: the tool's model arguments, and the cases (default all)
if [[ $DRY_RUN == 1 ]]; then
  PYTHON=${PYTHON:-.venv/bin/python}
  DEVICE=cpu IMG=32 MEM_BATCHES=(1 2) TIME_BATCH=2 CAP=4 BUDGETS=(4096 8192) TP_BUDGET=4096
  STEPS=(--steps 1 --warmup 0) MEM_REPEATS=1 TP_STEPS=(--steps 1 --warmup 0) DRY_FLAG=(--dry-run)
  export OMP_NUM_THREADS=1
  cat >"$WORK/revvit_tiny.py" <<'EOF'
model = dict(backbone=dict(type='mmrev.RevViT', arch=dict(
    embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64, patch_size=8)))
EOF
  ARGS[vit-tiny]="--config $WORK/revvit_tiny.py --depths 2"
  CASES[vit-tiny]="mmrev-rev mmpretrain-vit"
  ARGS[depth]=${ARGS[vit-tiny]}
  CASES[depth]=${CASES[vit-tiny]}
  MEMORY=(vit-tiny) TIME=(depth) THROUGHPUT=(vit-tiny)
else
  PYTHON=${PYTHON:-python3}
  DEVICE=cuda IMG=224 MEM_BATCHES=(16 32) TIME_BATCH=64 CAP=4096 BUDGETS=(16384 81920)
  TP_BUDGET=16384 STEPS=() MEM_REPEATS=2 TP_STEPS=(--steps 3 --warmup 1) DRY_FLAG=()
  for depth in 12 24 48; do ARGS[vit-s-$depth]="--arch small --depths $depth"; done
  ARGS[vit-b]="--arch base --depths 12"
  ARGS[vit-l]="--arch large --depths 24"
  CASES[vit-b]="mmrev-rev mmpretrain-revvit mmpretrain-vit" CASES[vit-l]=${CASES[vit-b]}
  ARGS[mvit-b]="--model revmvit"
  ARGS[depth]="--arch small --depths 12 24 48"
  ARGS[mvit-time]=${ARGS[mvit-b]}
  MEMORY=(vit-s-12 vit-s-24 vit-s-48 vit-b vit-l mvit-b) TIME=(depth mvit-time)
  THROUGHPUT=(vit-s-12 vit-s-48 mvit-b vit-b vit-l)
  echo "== installing gpu_wheels/ into /tmp/site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site gpu_wheels/*.whl ||
    { echo 'no gpu_wheels/: run prepare_gpu_validation.sh, carry gpu_wheels/' >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$PYTHONPATH
  "$PYTHON" -m compileall -q -j 0 /tmp/site mmrev tests tools >/dev/null
  # mmengine's collect_env (every Runner) imports distutils, which Python 3.12 dropped;
  # setuptools carries a copy.
  "$PYTHON" -c 'import distutils' 2>/dev/null || ln -s "$("$PYTHON" -c \
    'import os, setuptools._distutils as d; print(os.path.dirname(d.__file__))')" /tmp/site/distutils
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PYTHON" -c 'import sys, torch, numpy, mmengine, mmcv, mmpretrain, mmrev; print(
    "Python", sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__,
    "mmengine", mmengine.__version__, "mmcv", mmcv.__version__, "mmpretrain",
    mmpretrain.__version__, "mmrev", mmrev.__version__)' || exit 1

# bench NAME KIND ARGS...: one run of the benchmark tool into $WORK/NAME, its output
# after it in the log, its exit status in runs.tsv (-1: skipped, past the deadline).
bench() {
  local name=$1 kind=$2 start=$SECONDS rc=-1
  shift 2
  if ((SECONDS < DEADLINE)); then
    timeout "$RUN_TIMEOUT" "$PYTHON" "$BENCH" --device "$DEVICE" --img-sizes "$IMG" \
      --out-dir "$WORK/$name" "$@" </dev/null >"$WORK/$name.log" 2>&1
    rc=$?
  fi
  printf '%s\t%s\t%d\t%d\n' "$name" "$kind" "$rc" $((SECONDS - start)) >>"$WORK/runs.tsv"
  echo "== $name: $kind, exit status $rc, $((SECONDS - start)) s: $*"
  [[ -f $WORK/$name.log ]] && cat "$WORK/$name.log"
}

echo "== pytest -m cuda tests/test_cuda.py, and the memory runs"
timeout "$RUN_TIMEOUT" "$PYTHON" -m pytest -m cuda tests/test_cuda.py -q -p no:warnings \
  --junitxml="$OUT/pytest_cuda.xml" >"$WORK/pytest.log" 2>&1 &
JOBS=($!)
for name in "${MEMORY[@]}"; do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} bench "$name" memory ${ARGS[$name]} \
    ${CASES[$name]:+--cases ${CASES[$name]}} --batch-sizes "${MEM_BATCHES[@]}" --no-time \
    --mem-repeats "$MEM_REPEATS" &
  JOBS+=($!)
done
wait "${JOBS[0]}"
TESTS_RC=$?
wait "${JOBS[@]:1}"  # not a bare wait: that waits for the log's tee too
cat "$WORK/pytest.log"

for name in "${TIME[@]}"; do
  bench "$name" time ${ARGS[$name]} ${CASES[$name]:+--cases ${CASES[$name]}} \
    --batch-sizes "$TIME_BATCH" --no-memory "${STEPS[@]}"
done

while read -r name batch cases; do
  bench "tp-$name-b$batch" throughput ${ARGS[$name]} --cases $cases --batch-sizes "$batch" \
    --no-memory "${TP_STEPS[@]}"
done < <("$PYTHON" "$REPORT" batches --work "$WORK" --runs "${THROUGHPUT[@]}" \
  --budget-mib "$TP_BUDGET" --cap "$CAP" --cases mmrev-rev mmpretrain-vit mmpretrain-mvit)

"$PYTHON" "$REPORT" report --work "$WORK" --out "$OUT" --budgets "${BUDGETS[@]}" \
  --throughput-budget "$TP_BUDGET" "${DRY_FLAG[@]}" || exit 1
echo "GPU validation took $SECONDS s; results in $OUT"
FAILED=$(awk -F'\t' '$3 > 0 {print $1}' "$WORK/runs.tsv")
[[ -z $FAILED ]] || echo "benchmark runs that failed:" $FAILED
((TESTS_RC == 0)) && [[ -z $FAILED ]]
