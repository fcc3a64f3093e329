"""Resume really resumes: per-step losses after a kill -9 and `resume=auto` equal an uninterrupted run's, exactly
(fp32 on CPU, tiny model), for SFT, GRPO and DPO; a kill during a checkpoint write falls back to the previous
complete checkpoint; SIGTERM saves a checkpoint and exits.

Every run is pipeline/run.py in a subprocess; the interrupted ones are stopped with real signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.train.checkpoint.resume import (
    CheckpointError,
    check_checkpoint,
    checkpoints,
    is_complete,
    resolve_resume,
    rotate,
)
from tests.conftest import REPO, TINY, offline_env, run_pipeline

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


def logged(run_dir: Path) -> dict[int, dict]:
    """step -> the training log of that step (later lines win, as after a resume)."""
    rows = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.endswith("}") else {}
            if "loss" in row:
                rows[row["step"]] = row
    return rows


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300, poll: float = 0.01) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"run ended before the kill point: {output(proc)[-3000:]}"
        assert time.time() < deadline, "timed out waiting for the kill point"
        time.sleep(poll)


def baseline(stage: str, tmp_path: Path, cache: Path) -> dict[int, dict]:
    run_dir = tmp_path / "uninterrupted"
    proc = run_pipeline(args_for(stage, run_dir, cache), cwd=tmp_path, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = logged(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


# GRPO's loss is ~0 by construction with one policy update per batch (ratio 1, advantages centred): its grad norm,
# rewards and completion lengths show that the same completions were sampled from the same weights.
COMPARED = ("loss", "grad_norm", "reward", "completions/mean_length", "rewards/chosen")


def assert_same_losses(resumed: dict[int, dict], reference: dict[int, dict], first: int) -> None:
    for step in range(first, STEPS + 1):
        for key in COMPARED:
            if key in reference[step]:
                assert resumed[step][key] == reference[step][key], f"step {step}: {key}"


# SFT's kill -9 equality is in -m slow (the default suite's time); its resume path is the Trainer's, as GRPO's is
@pytest.mark.parametrize("stage", [pytest.param("sft", marks=pytest.mark.slow), "grpo"])
def test_kill_9_between_checkpoints_then_resume_equals_uninterrupted(stage, tmp_path, model_cache) -> None:
    kill_9_and_resume(stage, tmp_path, model_cache)


@pytest.mark.slow
def test_dpo_kill_9_then_resume_equals_uninterrupted(tmp_path, model_cache) -> None:
    # DPO's exactness (measured bit-for-bit, README); the default suite runs SFT and GRPO.
    kill_9_and_resume("dpo", tmp_path, model_cache)


def kill_9_and_resume(stage: str, tmp_path: Path, model_cache: Path) -> None:
    reference = baseline(stage, tmp_path, model_cache)
    # A different run dir: each run must stand on its own checkpoints.
    run_dir = tmp_path / "killed"
    proc = start(args_for(stage, run_dir, model_cache), tmp_path)
    # Step 3 is logged: checkpoint-2 is complete, checkpoint-4 not started -- the kill lands between them.
    wait_for(lambda: 3 in logged(run_dir), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [c.name for c in checkpoints(run_dir) if is_complete(c)] == ["checkpoint-2"]
    assert max(logged(run_dir)) < 4

    done = run_pipeline(args_for(stage, run_dir, model_cache, "resume=auto"), cwd=tmp_path, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout and "checkpoint-2" in done.stdout
    resumed = logged(run_dir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert_same_losses(resumed, reference, first=3)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == STEPS


def test_kill_during_checkpoint_write_resumes_from_the_previous_complete_one(tmp_path, model_cache) -> None:
    # Full fine-tuning: weights + optimizer state make the write long enough to land a kill inside it.
    run_dir = tmp_path / "run"
    args = args_for("sft", run_dir, model_cache, "peft=full")
    proc = start(args, tmp_path)
    partial = run_dir / "checkpoints" / "checkpoint-4"
    wait_for(partial.exists, proc, poll=0.0005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not is_complete(partial), "the kill missed the write window"
    assert is_complete(run_dir / "checkpoints" / "checkpoint-2")
    with pytest.raises(CheckpointError, match="not completely written"):
        check_checkpoint(partial)

    done = run_pipeline([*args, "resume=auto"], cwd=tmp_path, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "removing incomplete checkpoint" in done.stdout and "checkpoint-2 (step 2)" in done.stdout
    assert sorted(logged(run_dir)) == list(range(1, STEPS + 1))
    # keep=2 (default): checkpoint-2 and the rewritten checkpoint-4, both complete
    assert [(c.name, is_complete(c)) for c in checkpoints(run_dir)] == [
        ("checkpoint-2", True), ("checkpoint-4", True)
    ]


def test_sigterm_saves_a_checkpoint_and_dpo_resumes_from_it(tmp_path, model_cache) -> None:
    run_dir = tmp_path / "stopped"
    # No periodic checkpoints: the only one is what SIGTERM writes.
    args = args_for("dpo", run_dir, model_cache, "stage.save_steps=0")
    proc = start(args, tmp_path)
    wait_for(lambda: 3 in logged(run_dir), proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = output(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM received" in err and "resume=auto" in err
    (saved,) = checkpoints(run_dir)
    assert is_complete(saved) and saved.name in {"checkpoint-3", "checkpoint-4"}
    # An interrupted run leaves nothing that looks finished.
    assert not (run_dir / "final").exists() and not (run_dir / "summary.json").exists()

    done = run_pipeline(args_for("dpo", run_dir, model_cache, "resume=auto"), cwd=tmp_path, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {saved}" in done.stdout
    assert sorted(logged(run_dir)) == list(range(1, STEPS + 1)) and (run_dir / "summary.json").exists()



def test_resume_path_and_auto_edge_cases(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert resolve_resume(None, run_dir) is None
    # auto with nothing saved yet starts fresh, so the same command works for the first launch and a requeue
    assert resolve_resume("auto", run_dir) is None
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        resolve_resume(str(tmp_path / "nope"), run_dir)


def test_rotation_keeps_the_newest_complete_and_drops_stale_partials(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step, complete in [(2, True), (4, False), (6, True), (8, True), (10, False)]:
        (root / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (root / f"checkpoint-{step}" / "checkpoint_complete.json").write_text('{"files": {}}')
    rotate(tmp_path, keep=2)
    # checkpoint-10 may be the one being written right now: only partials older than the newest complete go
    assert [c.name for c in checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-8", "checkpoint-10"]


def test_a_checkpoint_at_the_last_step_is_not_trained_one_step_further(tmp_path: Path) -> None:
    from pipeline.train.checkpoint.resume import already_done

    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 4, "max_steps": 4}))
    assert already_done(str(tmp_path), max_steps=-1) and already_done(str(tmp_path), max_steps=4)
    # a longer run asked for on resume: keep training
    assert not already_done(str(tmp_path), max_steps=6) and not already_done(None, max_steps=4)
