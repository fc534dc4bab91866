#!/usr/bin/env bash
# Create (or reuse) the project environment in ./.venv from nothing but Python 3.11.
#
# Pins a consistent torch/torchvision pair from the package registry (uv reads only the
# registry, never pip's find-links, where a CPU-only torch that torchvision cannot load
# with may live), compiles mmcv 2.1.0 with its CPU ops once into a wheel cache outside the
# repo (so later environments on the same machine reuse it), then installs mmrev editable.
# A second run finds everything in place and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.mmrev-env-ok
PINS=(torch==2.13.0 torchvision==0.28.0 mmengine==0.10.7 mmpretrain==1.2.0 mmdet==3.3.0)
MMACTION=mmaction2==1.2.0

if [[ -f $STAMP && $STAMP -nt setup.py && $STAMP -nt tools/setup_env.sh ]]; then
  echo "mmrev environment ready in $VENV"
  exit 0
fi

command -v "$PYTHON" >/dev/null || PYTHON=python3
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
[[ -x $VENV/bin/uv ]] || "$VENV/bin/python" -m pip install --quiet --no-cache-dir 'uv>=0.5'
uv() { "$VENV/bin/uv" "$@"; }
export UV_PYTHON=$VENV/bin/python UV_HTTP_TIMEOUT=600

# 1. torch + torchvision, and what mmcv's build needs in the environment (mmcv's setup.py
#    and mmengine import pkg_resources, which setuptools>=80 drops).
uv pip install "${PINS[0]}" "${PINS[1]}" 'setuptools<80' wheel ninja 'numpy<2' psutil
# 2. mmcv with CPU ops, built against the torch above (no isolation). uv's cache loses such
#    a build whenever it re-validates the sdist, so the wheel is kept in a cache of our own,
#    one folder per torch version; it is moved there only once complete.
WHEELS=${XDG_CACHE_HOME:-$HOME/.cache}/mmrev/wheels/${PINS[0]/==/-}
if ! compgen -G "$WHEELS/mmcv-2.1.0-*.whl" >/dev/null; then
  mkdir -p "$WHEELS"
  BUILD=$(mktemp -d "$WHEELS/build.XXXXXX")
  trap 'rm -rf "$BUILD"' EXIT
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$VENV/bin/python" -m pip wheel \
    --quiet --no-cache-dir --no-deps --no-build-isolation --wheel-dir "$BUILD" mmcv==2.1.0
  mv "$BUILD"/mmcv-2.1.0-*.whl "$WHEELS"/
fi
uv pip install "$WHEELS"/mmcv-2.1.0-*.whl
# 3. the rest, and mmrev itself (editable, with test and lint tools and video extras).
uv pip install "${PINS[@]:2}" 'numpy<2' -e '.[tests,video]'
# 4. mmaction2 without its requirements: they pin opencv-contrib-python, which would
#    replace mmcv's opencv-python (the packages the video extra names are what it needs).
#    Its 1.2.0 package lacks mmaction/models/localizers/drn: import mmrev supplies it.
uv pip install --no-deps "$MMACTION"
"$VENV/bin/python" -c "import torchvision, mmcv.ops, mmdet.models, mmpretrain, mmrev, mmaction.models"
touch "$STAMP"
echo "mmrev environment ready in $VENV"
