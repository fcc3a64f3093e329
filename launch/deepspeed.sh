#!/usr/bin/env bash
# Multi-node (or one-node) DeepSpeed launch from a hostfile; run it on the first host of the hostfile only:
# the deepspeed launcher ssh-es into the others (passwordless ssh; the repo and environment at the same path).
#   HOSTFILE=hostfiles/two_nodes launch/deepspeed.sh stage=sft hw=2x8xh100 zero=zero3
#   HOSTFILE=hostfiles/localhost MASTER_ADDR=127.0.0.1 DS_FLAGS=--no_ssh_check launch/deepspeed.sh hw=cpu_2proc
# Env defaults: HOSTFILE=<repo>/hostfiles/two_nodes, MASTER_PORT=29500, PYTHON=python, RUN_ID=<timestamp>;
# MASTER_ADDR (unset: DeepSpeed asks the first host over ssh), DS_FLAGS (extra launcher flags, e.g. --no_ssh_check
# for a one-machine hostfile without sshd). Every argument is a Hydra override passed through unchanged; run_id is
# passed as an override too, because environment variables do not reach the other hosts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOSTFILE=${HOSTFILE:-$ROOT/hostfiles/two_nodes}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}
RUN_ID=${RUN_ID:-$(date +%Y%m%d_%H%M%S)}
export RUN_ID
# shellcheck disable=SC2086  # DS_FLAGS is a list of flags
set -x
exec "$PYTHON" -m deepspeed.launcher.runner --hostfile "$HOSTFILE" --master_port "$MASTER_PORT" \
    ${MASTER_ADDR:+--master_addr "$MASTER_ADDR"} ${DS_FLAGS:-} "$ROOT/pipeline/run.py" "run_id=$RUN_ID" "$@"
