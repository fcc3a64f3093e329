"""KTO, ORPO, SimPO, the reward model and a three-step chain: 2 real TRL steps each on model=tiny, through
pipeline/run.py in a subprocess, on the built-in arithmetic data; the run dir is read back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, run_pipeline
from tests.test_e2e import scalars

# stage -> (extra overrides incl. one stage.trl pass-through field, (TRL args field, value) it must reach,
#           TensorBoard tags only that trainer logs)
CASES = {
    "kto": (["stage.trl.ref_model_sync_steps=7"], ("ref_model_sync_steps", 7), ["train/kl", "train/rewards/chosen"]),
    "orpo": (["stage.trl.max_completion_length=48"], ("max_completion_length", 48),
             ["train/log_odds_ratio", "train/nll_loss"]),
    "simpo": (["stage.trl.label_smoothing=0.1"], ("loss_type", "simpo"),
              ["train/rewards/margins", "train/rewards/accuracies"]),
    "rm": (["stage.trl.center_rewards_coefficient=0.01", "stage.heldout_pairs=16"],
           ("center_rewards_coefficient", 0.01), ["train/accuracy", "train/margin"]),
}


def _train_args(final: Path):
    # the TRL config the trainer really ran with (Trainer.save_model writes it beside the weights)
    return torch.load(final / "training_args.bin", weights_only=False)


@pytest.mark.parametrize("stage", sorted(CASES))
def test_new_stage_trains_two_steps_and_logs_its_metrics(stage: str, tmp_path: Path, model_cache: Path) -> None:
    extra, (field, value), tags = CASES[stage]
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
    assert getattr(_train_args(final), field) == value
    if stage == "rm":
        _check_reward_model(final, summary)
    else:
        assert summary["eval_problems"] == 8 and 0.0 <= summary["accuracy_after"] <= 1.0
        assert (final / "adapter_model.safetensors").is_file()


def _check_reward_model(final: Path, summary: dict) -> None:
    from transformers import AutoModelForSequenceClassification

    assert summary["heldout_pairs"] == 16 and 0.0 <= summary["pair_accuracy"] <= 1.0
    assert summary["accuracy_before"] is None  # a reward model does not generate answers
    # a full model (LoRA merged), loadable as is by a reward-model term
    assert not (final / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(str(final))
    with torch.no_grad():
        scores = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert scores.shape == (1, 1) and torch.isfinite(scores).all()


def test_chain_of_three_steps_with_a_reward_model_in_the_middle(tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    # a chain's knobs are per step (stage.<name>.*): TINY's stage-level key is set for each step instead
    tiny = [o for o in TINY if not o.startswith("stage.")]
    keys = ("batch_size=4", "eval_max_new_tokens=4")
    steps = [f"stage.{name}.{key}" for name in ("sft", "rm", "dpo") for key in keys]
    proc = run_pipeline(["stage=chain", "stage.stages=[sft,rm,dpo]", *tiny, *steps, "max_steps=1",
                         "stage.rm.heldout_pairs=8", "stage.dpo.loss_type=ipo", f"output_dir={run_dir}",
                         f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["sft", "rm", "dpo"]
    assert summary["final_dir"] == str(run_dir / "3_dpo" / "final")
    # DPO starts from the SFT policy, not from the reward model in between, and ran the IPO loss
    dpo_args = _train_args(run_dir / "3_dpo" / "final")
    assert dpo_args.loss_type == ["ipo"]
    assert f"init_from: {run_dir / '1_sft' / 'final'}" in (run_dir / "3_dpo" / "config.yaml").read_text()
    assert "ForSequenceClassification" in (run_dir / "2_rm" / "final" / "config.json").read_text()


def test_grpo_rewards_come_from_the_reward_model_an_earlier_step_trained(tmp_path: Path, model_cache: Path) -> None:
    """stage=rm feeding GRPO: `reward.terms.rm.model=chain:rm` names a directory that exists only once the rm step
    has run; validation takes it as coming, and the GRPO step scores its completions with that model."""
    run_dir = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("stage.")]
    proc = run_pipeline(["stage=chain", "stage.stages=[rm,grpo]", *tiny, "reward=model",
                         "reward.terms.rm.model=chain:rm", "stage.rm.batch_size=4", "stage.grpo.batch_size=8",
                         "stage.grpo.num_generations=4",
                         "stage.grpo.max_completion_length=8", "stage.grpo.eval_max_new_tokens=4",
                         f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rm_final = run_dir / "1_rm" / "final"
    assert f"model: {rm_final}" in (run_dir / "2_grpo" / "config.yaml").read_text()
    metrics = json.loads((run_dir / "2_grpo" / "summary.json").read_text())["metrics"]
    assert math.isfinite(metrics["rewards/rm/mean"]) and metrics["rewards/rm/std"] > 0
    # a reward model is not the policy: GRPO starts from the base model, not from the classifier
    assert "init_from: null" in (run_dir / "2_grpo" / "config.yaml").read_text()


def test_a_reference_to_a_later_step_s_model_is_refused(tmp_path: Path) -> None:
    proc = run_pipeline(["stage=chain", "stage.stages=[grpo,rm]", "model=tiny", "reward=model",
                         "reward.terms.rm.model=chain:rm", f"output_dir={tmp_path / 'run'}", "dry_run=true"],
                        cwd=tmp_path)
    assert proc.returncode != 0
    assert "reward.terms.rm.model=chain:rm: step rm runs after the step that uses this term" in proc.stderr
