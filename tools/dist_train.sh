#!/usr/bin/env bash
# Distributed training on one or more machines with torchrun:
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py arguments]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each.
set -euo pipefail
exec bash "$(dirname "$0")/dist_run.sh" "$2" train.py "$1" --launcher pytorch "${@:3}"
