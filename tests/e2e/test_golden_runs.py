"""Each stage's fixed-seed 3-step tiny run (LoRA) logs the losses, grad norms and rewards pinned in
golden_runs.json, and leaves a complete run dir (tests/helpers/stage_checks.py) -- the one run per stage the default
suite makes; tests/e2e/test_stages.py covers full fine-tuning and nf4.

A finite loss is not enough: a change to the math (a mask, a normalisation, a reference forward) that still trains
fails here. Regenerating the numbers is deliberate: `python -m tests.helpers.golden [stage ...]`."""

from __future__ import annotations

import json

import pytest

from tests.helpers.golden import COMMON, GOLDEN, STAGES, differences, overrides, run
from tests.helpers.stage_checks import check_run_dir

STEPS = int(next(a for a in COMMON if a.startswith("max_steps=")).split("=")[1])


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_trains_the_pinned_numbers_into_a_complete_run_dir(stage: str, tmp_path, model_cache) -> None:
    pinned = json.loads(GOLDEN.read_text())[stage]
    assert pinned["overrides"] == overrides(stage), "the run's settings changed: regenerate the golden numbers"
    assert pinned["steps"] and all("loss" in s for s in pinned["steps"])
    diffs = differences(run(stage, tmp_path, model_cache), pinned["steps"])
    assert not diffs, f"{stage} trains other numbers than pinned (regenerate only if meant):\n" + "\n".join(diffs)
    if stage != "group_pref":  # its own data (scored groups, no held-out problems): tests/e2e/test_group_pref.py
        check_run_dir(tmp_path / stage, stage, STEPS, model_cache)


def test_a_moved_number_is_named() -> None:
    pinned = json.loads(GOLDEN.read_text())["grpo"]["steps"]
    moved = [dict(s) for s in pinned]
    moved[1]["loss"] = moved[1]["loss"] * 1.01 + 1e-3
    assert differences(pinned, pinned) == []
    assert [d.split(":")[0] for d in differences(moved, pinned)] == [f"step {pinned[1]['step']} loss"]
