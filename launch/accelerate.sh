#!/usr/bin/env bash
# accelerate launch on one node, or on each of several nodes (start it once per node with its NODE_RANK).
#   NUM_PROCESSES=2 launch/accelerate.sh stage=grpo hw=dual_3090
#   NUM_MACHINES=2 NODE_RANK=1 NUM_PROCESSES=16 MASTER_ADDR=10.0.0.1 RUN_ID=exp1 launch/accelerate.sh hw=2x8xh100
# Env defaults: NUM_PROCESSES=1 (over all machines), NUM_MACHINES=1, NODE_RANK=$SLURM_NODEID or 0,
# MASTER_ADDR=127.0.0.1, MASTER_PORT=29500, PYTHON=python. Several machines need one RUN_ID on all of them.
# --multi_gpu is what makes accelerate start N processes (on CPU too, with gloo); DeepSpeed comes from the zero
# profile's JSON through the Trainer. Every argument is a Hydra override passed through unchanged.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NUM_PROCESSES=${NUM_PROCESSES:-1}
NUM_MACHINES=${NUM_MACHINES:-1}
NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-0}}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}
if [[ "$NUM_MACHINES" -gt 1 && -z "${RUN_ID:-}" ]]; then
    echo "launch/accelerate.sh: NUM_MACHINES=$NUM_MACHINES needs RUN_ID set to the same value on every machine" >&2
    exit 2
fi
RUN_ID=${RUN_ID:-$(date +%Y%m%d_%H%M%S)}
export RUN_ID
set -x
exec "$PYTHON" -m accelerate.commands.launch --multi_gpu --num_processes "$NUM_PROCESSES" \
    --num_machines "$NUM_MACHINES" --machine_rank "$NODE_RANK" --main_process_ip "$MASTER_ADDR" \
    --main_process_port "$MASTER_PORT" "$ROOT/pipeline/run.py" "$@"
