"""Resume really resumes: per-step losses after a kill -9 and `resume=auto` equal an uninterrupted run's, exactly
(fp32 on CPU, tiny model), for SFT, GRPO and DPO; a kill during a checkpoint write falls back to the previous
complete checkpoint; SIGTERM saves a checkpoint and exits.

Every run is pipeline/run.py in a subprocess; the interrupted ones are stopped with real signals.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from pipeline.train.checkpoint.resume import (
    CheckpointError,
    check_checkpoint,
    checkpoints,
    is_complete,
    mark_complete,
)
from tests.helpers.checkpoints import deepspeed_checkpoint
from tests.helpers.resume import STEPS, args_for, assert_same_losses, output, start, wait_for
from tests.helpers.runs import TINY, logged, run_pipeline


def baseline(stage: str, tmp_path: Path, cache: Path) -> dict[int, dict]:
    run_dir = tmp_path / "uninterrupted"
    proc = run_pipeline(args_for(stage, run_dir, cache), cwd=tmp_path, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = logged(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


# In -m slow (the default suite's time): SFT's resume path is the Trainer's, as GRPO's is, and GRPO's kill -9
# equality runs by default with an environment on top (tests/e2e/test_tools_scale.py, the game's own RNG restored)
@pytest.mark.parametrize("stage", [pytest.param("sft", marks=pytest.mark.slow),
                                   pytest.param("grpo", marks=pytest.mark.slow)])
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


def test_resume_auto_refuses_a_world_size_change_before_the_model_loads(tmp_path) -> None:
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    mark_complete(deepspeed_checkpoint(run_dir), world_size=2)
    proc = run_pipeline([*TINY, "stage=sft", "resume=auto", f"output_dir={run_dir}", f"paths.cache_dir={cache}"],
                        cwd=tmp_path)
    assert proc.returncode != 0
    assert "written by 2 processes and this run has 1" in proc.stdout + proc.stderr
    assert not cache.exists(), "the model was materialised before the refusal"
