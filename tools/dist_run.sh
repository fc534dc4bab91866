#!/usr/bin/env bash
# Run a tools/ script in GPUS processes per machine with torchrun:
#   bash tools/dist_run.sh GPUS SCRIPT [script arguments]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each.
set -euo pipefail
GPUS=$1
TOOLS=$(dirname "$0")
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" "$TOOLS/$2" "${@:3}"
