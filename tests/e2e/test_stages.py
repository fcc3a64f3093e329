"""Stages with full fine-tuning and nf4 run two steps through pipeline/run.py on the tiny model; the run dir is read
back. RLOO runs here with LoRA and off-default knobs that must reach TRL's RLOOConfig. Each other stage with LoRA
(SFT, DPO, GRPO, KTO, ORPO, SimPO, the reward model, each with a stage.trl field reaching TRL) is the golden run of
tests/e2e/test_golden_runs.py, checked the same way (tests/helpers/stage_checks.py).

These are real TRL trainers in a subprocess, exactly as a user starts them; nothing is mocked."""

from __future__ import annotations

import pytest

from tests.helpers.runs import TINY, run_pipeline
from tests.helpers.stage_checks import check_run_dir

# stage-specific knobs that keep 2 steps to a few seconds on 2 cores
STAGE_ARGS = {
    "sft": ["stage.batch_size=8"],
    "dpo": ["stage.batch_size=4"],
    # a dense reward: a random model never answers right, and all-zero rewards give zero gradients
    "grpo": ["stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8", "reward=shaped"],
    # values off TRL's defaults (num_generations 2, beta 0.05, normalize_advantages off), so reaching it is visible
    "rloo": ["stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8", "reward=shaped",
             "stage.beta=0.1", "stage.normalize_advantages=true", "stage.trl.reward_clip_range=[-2.0,2.0]"],
}


CASES = [
    pytest.param("sft", "full", "none", marks=pytest.mark.slow),  # full fine-tuning runs by default for DPO/GRPO
    ("dpo", "full", "none"),
    ("grpo", "full", "none"),
    ("grpo", "lora", "nf4"),
    # RLOO has no golden run: its LoRA run is here
    ("rloo", "lora", "none"),
]


@pytest.mark.parametrize(("stage", "peft", "quant"), CASES, ids=lambda x: x)
def test_stage_runs_and_leaves_a_complete_run_dir(stage, peft, quant, tmp_path, model_cache) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        [f"stage={stage}", f"peft={peft}", f"quant={quant}", *TINY, *STAGE_ARGS[stage],
         f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    if stage == "rloo":  # hw=cpu turns on two GRPOTrainer levers; RLOO must say it runs without them
        assert "off for stage=rloo" in proc.stdout + proc.stderr
    check_run_dir(run_dir, stage, 2, model_cache, peft=peft, quant=quant)
