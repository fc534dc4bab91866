#!/usr/bin/env bash
# Distributed testing on one or more machines with torchrun:
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py arguments]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each.
set -euo pipefail
exec bash "$(dirname "$0")/dist_run.sh" "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
