#!/usr/bin/env bash
# torchrun on one node, or on each of several nodes (start it once per node with its NODE_RANK).
#   launch/torchrun.sh stage=grpo hw=dual_3090                                          # one node
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 RUN_ID=exp1 launch/torchrun.sh hw=2x8xh100 stage=sft  # node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 RUN_ID=exp1 launch/torchrun.sh hw=2x8xh100 stage=sft  # node 1
# Env defaults: NNODES=1, NPROC_PER_NODE=1, NODE_RANK=$SLURM_NODEID or 0, MASTER_ADDR=127.0.0.1,
# MASTER_PORT=29500, PYTHON=python. Several nodes need one RUN_ID given to all of them (one run dir).
# Every argument is a Hydra override passed through unchanged; relative paths stay relative to where you are.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NNODES=${NNODES:-1}
NPROC_PER_NODE=${NPROC_PER_NODE:-1}
NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-0}}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}
if [[ "$NNODES" -gt 1 && -z "${RUN_ID:-}" ]]; then
    echo "launch/torchrun.sh: NNODES=$NNODES needs RUN_ID set to the same value on every node" >&2
    exit 2
fi
RUN_ID=${RUN_ID:-$(date +%Y%m%d_%H%M%S)}
export RUN_ID
set -x
exec "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" \
    --nproc_per_node "$NPROC_PER_NODE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    "$ROOT/pipeline/run.py" "$@"
