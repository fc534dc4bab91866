#!/usr/bin/env bash
# Run here, before a GPU machine is lent: fill gpu_wheels/ (ignored by git) with the
# pure-Python wheels that the bare GPU machine (Python 3.12, torch, torchvision, numpy 2,
# matplotlib, opencv, rich, pyyaml, pytest, ... but no OpenMMLab package and no network)
# lacks to run tools/analysis_tools/gpu_validation.sh; that script installs them there.
#   bash tools/analysis_tools/prepare_gpu_validation.sh
# mmcv comes as mmcv-lite, the same 2.1.0 Python code built without compiled ops
# (MMCV_WITH_OPS=0): enough for mmrev's backbones, mmpretrain and mmengine, not for mmdet's
# detectors (RoIAlign, NMS), so detection is not validated on the GPU. mmrev itself runs
# from the working tree (PYTHONPATH). The versions are the ones tools/setup_env.sh installs.
set -euo pipefail
cd "$(dirname "$0")/../.."

DEST=gpu_wheels
PYTHON=${PYTHON:-.venv/bin/python}
LIMIT_MIB=64  # what may travel to the GPU machine: working tree and carried folders
WHEELS=(
  mmengine==0.10.7 mmcv-lite==2.1.0 mmpretrain==1.2.0
  addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9  # mmengine, mmcv
  model-index==0.1.11 ordered-set==4.1.0 mat4py==0.6.0              # mmpretrain
  importlib-metadata==10.2.0 lazy-importer==0.1.0
)

rm -rf "$DEST"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp -d "$DEST" "${WHEELS[@]}"

# pip --target installs fail on two versions of one package, and a compiled wheel
# built for this machine need not load there: only one pure-Python wheel per package.
names=$(for wheel in "$DEST"/*.whl; do basename "$wheel" | cut -d- -f1; done)
if [[ $(sort <<<"$names" | uniq -d) ]]; then
  echo "two versions of: $(sort <<<"$names" | uniq -d)" >&2
  exit 1
fi
if compgen -G "$DEST/*.whl" | grep -v -- '-none-any\.whl$' >&2; then
  echo 'not pure-Python wheels (above): they may not load on the GPU machine' >&2
  exit 1
fi

wheels_kib=$(du -sk "$DEST" | cut -f1)
tree_kib=$(git ls-files -z --cached --others --exclude-standard | du -ck --files0-from=- | tail -1 | cut -f1)
total_mib=$(((wheels_kib + tree_kib) / 1024))
echo "$(ls "$DEST" | wc -l) wheels, $((wheels_kib / 1024)) MiB, in $DEST/; with the working" \
  "tree $total_mib MiB of the $LIMIT_MIB MiB that may travel"
if ((total_mib >= LIMIT_MIB)); then
  echo "over the limit: ignore or remove files before running on the GPU machine" >&2
  exit 1
fi
echo "On the GPU machine (carry $DEST): bash tools/analysis_tools/gpu_validation.sh"
