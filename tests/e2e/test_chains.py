"""Chains through pipeline/run.py on model=tiny: three steps with a reward model in the middle, GRPO rewarded by the
reward model an earlier step trained, and a reference to a later step refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers.runs import TINY, run_pipeline, trl_args


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
    dpo_args = trl_args(run_dir / "3_dpo" / "final")
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
