#!/usr/bin/env bash
# Proves the GPU path in one command (<= 8 minutes on one H100/H200), or its logic on CPU with --dry.
#
#   bench/gpu_check.sh OUTDIR          # GPU machine: install bench/gpu_wheels/ offline, then every step
#   bench/gpu_check.sh --dry OUTDIR    # CPU: model=tiny, 1 step each, no install; checks the wheel list too
#
# Steps (bench/gpu_check.py, each under its own time box): bf16 SFT, DPO and GRPO for 10 steps on
# model=qwen2.5_0.5b_shape; GRPO with quant=nf4; SFT under DeepSpeed ZeRO-2 and ZeRO-3 on one GPU through the
# deepspeed launcher; bench/run.py grpo_gpu and sft_gpu. Each run's peak memory sits beside the dry run's estimate
# in OUTDIR/gpu_check.{json,md}; the table is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=""
if [ "${1:-}" = "--dry" ]; then DRY="--dry"; shift; fi
OUT="${1:?usage: bench/gpu_check.sh [--dry] OUTDIR}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
if [ -z "$DRY" ]; then
    [ -d bench/gpu_wheels ] || { echo "bench/gpu_wheels/ missing: run 'make gpu-wheels' where there is network"; exit 2; }
    # --no-index: the GPU machine has no network; --no-deps: exactly the pinned set, nothing resolved
    timeout 45 "$PY" -m pip install -q --no-index --no-deps --find-links bench/gpu_wheels \
        -r bench/gpu_wheels.txt > "$OUT/install.log" 2>&1 || echo "wheel install failed: see $OUT/install.log"
    # DeepSpeed and antlr4 come as sdists; without DeepSpeed the two ZeRO steps fail and say so, the rest run
    DS_BUILD_OPS=0 timeout 45 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
        --find-links bench/gpu_wheels -r bench/gpu_sdists.txt >> "$OUT/install.log" 2>&1 \
        || echo "sdist install failed (DeepSpeed steps will fail): see $OUT/install.log"
fi
exec "$PY" bench/gpu_check.py $DRY "$OUT"
