"""Interrupted runs: the 4-step settings with checkpoints at steps 2 and 4, a run started in the background with its
output in a file, waiting for a kill point, and per-step comparison with an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.runs import REPO, TINY, offline_env

# Checkpoints at steps 2 and 4; the kill lands in step 3 or inside the step-4 write.
STEPS = 4
STAGE_ARGS = {
    "sft": ["stage=sft", "stage.batch_size=8"],
    "dpo": ["stage=dpo", "stage.batch_size=4"],
    "grpo": ["stage=grpo", "stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8",
             "reward=shaped"],
}


def args_for(stage: str, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    # Constant lr makes every step's update matter equally; sampling (GRPO) draws from the torch RNG.
    return [*TINY, f"max_steps={STEPS}", *STAGE_ARGS[stage], "stage.save_steps=2", "stage.lr_scheduler=constant",
            "stage.learning_rate=1e-3", "logging.samples_every=1", f"output_dir={run_dir}",
            f"paths.cache_dir={cache}", *extra]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    # Output to a file, not a pipe: nobody reads a pipe while we poll, and a full one would block the run.
    log = cwd / "interrupted.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "pipeline" / "run.py"), *args], cwd=cwd,
            env=offline_env(OMP_NUM_THREADS="1"), stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    proc.log = log
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log.read_text()


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300, poll: float = 0.01) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"run ended before the kill point: {output(proc)[-3000:]}"
        assert time.time() < deadline, "timed out waiting for the kill point"
        time.sleep(poll)


# GRPO's loss is ~0 by construction with one policy update per batch (ratio 1, advantages centred): its grad norm,
# rewards and completion lengths show that the same completions were sampled from the same weights.
COMPARED = ("loss", "grad_norm", "reward", "completions/mean_length", "rewards/chosen")


def assert_same_losses(resumed: dict[int, dict], reference: dict[int, dict], first: int) -> None:
    for step in range(first, STEPS + 1):
        for key in COMPARED:
            if key in reference[step]:
                assert resumed[step][key] == reference[step][key], f"step {step}: {key}"
