"""resume= edge cases, rotation of checkpoints, and a checkpoint at the last step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.train.checkpoint.resume import (
    CheckpointError,
    checkpoints,
    resolve_resume,
    rotate,
)


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
