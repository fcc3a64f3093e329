"""Each stage runs a few steps through pipeline/run.py on the tiny model; the run dir is read back: SFT, DPO, GRPO
(LoRA, full, nf4) and KTO, ORPO, SimPO and the reward model with a stage.trl field reaching TRL.

These are real TRL trainers in a subprocess, exactly as a user starts them; nothing is mocked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import (
    TINY,
    adapter_loads_onto_the_base,
    check_reward_model,
    run_pipeline,
    scalars,
    tiny_model_dir,
    trl_args,
)

# stage-specific knobs that keep 2 steps to a few seconds on 2 cores
STAGE_ARGS = {
    "sft": ["stage.batch_size=8"],
    "dpo": ["stage.batch_size=4"],
    # a dense reward: a random model never answers right, and all-zero rewards give zero gradients
    "grpo": ["stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8", "reward=shaped"],
}


CASES = [
    ("sft", "lora", "none"),
    pytest.param("sft", "full", "none", marks=pytest.mark.slow),  # full fine-tuning runs by default for DPO/GRPO
    ("dpo", "lora", "none"),
    ("dpo", "full", "none"),
    ("grpo", "lora", "none"),
    ("grpo", "full", "none"),
    ("grpo", "lora", "nf4"),
]


def tiny_initial_weights(cache: Path) -> dict[str, torch.Tensor]:
    model_dir = tiny_model_dir(cache)
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize(("stage", "peft", "quant"), CASES, ids=lambda x: x)
def test_stage_runs_and_leaves_a_complete_run_dir(stage, peft, quant, tmp_path, model_cache) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        [f"stage={stage}", f"peft={peft}", f"quant={quant}", *TINY, *STAGE_ARGS[stage],
         f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stage"], summary["peft"], summary["quant"], summary["steps"]) == (stage, peft, quant, 2)
    assert summary["eval_problems"] == 8
    assert 0.0 <= summary["accuracy_before"] <= 1.0 and 0.0 <= summary["accuracy_after"] <= 1.0
    assert summary["seconds_per_step"] > 0 and summary["wall_time_s"] > 0
    assert (run_dir / "samples" / "eval_after.jsonl").read_text().count("\n") == 8
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "config.yaml").exists()

    logged = scalars(run_dir)
    loss_tag = "train/loss"
    assert len(logged[loss_tag]) == 2 and all(math.isfinite(v) for v in logged[loss_tag])
    assert all(math.isfinite(v) for v in logged["train/learning_rate"])
    if stage == "grpo":
        assert "train/rewards/correctness/mean" in logged and "train/rewards/length/mean" in logged

    final = run_dir / "final"
    assert not (run_dir / "final.partial").exists()
    initial = tiny_initial_weights(model_cache)
    if peft == "lora":
        adapter = load_file(str(final / "adapter_model.safetensors"))
        lora_b = [t for k, t in adapter.items() if "lora_B" in k]
        # LoRA B starts at zero: any nonzero entry means the optimizer really updated the adapter.
        assert lora_b and all(t.numel() > 0 for t in lora_b)
        assert any(t.abs().max() > 0 for t in lora_b)
        adapter_loads_onto_the_base(final, model_cache)
    else:
        trained = load_file(str(final / "model.safetensors"))
        changed = [k for k, t in trained.items() if k in initial and not torch.equal(t, initial[k])]
        assert changed, "full fine-tuning saved weights identical to the initial model"


# stage -> (extra overrides incl. one stage.trl pass-through field, (TRL args field, value) it must reach,
#           TensorBoard tags only that trainer logs)
TRL_STAGES = {
    "kto": (["stage.trl.ref_model_sync_steps=7"], ("ref_model_sync_steps", 7), ["train/kl", "train/rewards/chosen"]),
    "orpo": (["stage.trl.max_completion_length=48"], ("max_completion_length", 48),
             ["train/log_odds_ratio", "train/nll_loss"]),
    "simpo": (["stage.trl.label_smoothing=0.1"], ("loss_type", "simpo"),
              ["train/rewards/margins", "train/rewards/accuracies"]),
    "rm": (["stage.trl.center_rewards_coefficient=0.01", "stage.heldout_pairs=16"],
           ("center_rewards_coefficient", 0.01), ["train/accuracy", "train/margin"]),
}


@pytest.mark.parametrize("stage", sorted(TRL_STAGES))
def test_new_stage_trains_two_steps_and_logs_its_metrics(stage: str, tmp_path: Path, model_cache: Path) -> None:
    extra, (field, value), tags = TRL_STAGES[stage]
    run_dir = tmp_path / "run"
    proc = run_pipeline([f"stage={stage}", *TINY, "stage.batch_size=4", *extra, f"output_dir={run_dir}",
                         f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stage"], summary["steps"]) == (stage, 2)
    logged = scalars(run_dir)
    assert len(logged["train/loss"]) == 2 and all(math.isfinite(v) for v in logged["train/loss"])
    assert all(tag in logged for tag in tags), sorted(logged)
    final = run_dir / "final"
    assert getattr(trl_args(final), field) == value
    if stage == "rm":
        check_reward_model(final, summary)
    else:
        assert summary["eval_problems"] == 8 and 0.0 <= summary["accuracy_after"] <= 1.0
        assert (final / "adapter_model.safetensors").is_file()
