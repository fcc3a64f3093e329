"""The run plan (pipeline/config/plan.py), the stage table and the run directory: derived values computed once,
a read-only config, chains planned with the run, and the layout written only by rank 0."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipeline.config.derived import ds_config_path, split_batch
from pipeline.config.frozen import FrozenConfigError, thawed
from pipeline.config.plan import RunPlan, plan_run
from pipeline.config.run_dir import RunDir, replacing
from pipeline.config.schema import RunConfig
from pipeline.config.stage_table import Stage, UnknownStageError, stage_spec
from pipeline.train.stages import run_stage
from tests.helpers.runs import REPO, compose_config


def plan(overrides: list[str], run_dir: Path = Path("/tmp/plan")) -> RunPlan:
    return plan_run(compose_config(["model=tiny", *overrides]), run_dir)


def test_plan_holds_the_derived_values() -> None:
    p = plan(["hw=8xh100", "stage=sft", "stage.batch_size=256"])
    assert (p.world_size, p.rank, p.stage.name) == (8, 0, "sft")
    assert (p.micro_batch, p.grad_accum) == split_batch(p.cfg) == (16, 2)
    assert p.ds_config == ds_config_path(p.cfg) == REPO / "ds_configs" / "zero2.json"
    assert p.sequence_tokens == p.cfg.stage.max_length and not p.steps


@pytest.mark.parametrize(("overrides", "split"), [
    # GRPO's shared-prefix layout on CPU: micro-batches round up to whole groups of num_generations (the profiles'
    # own micro-batches: the arithmetic recipe's 32 set aside)
    (["stage=grpo", "stage.shared_prefix=true", "hw=cpu", "stage.num_generations=8", "hw.micro_batch=2"], (8, 4)),
    (["stage=grpo", "stage.shared_prefix=true", "hw=cpu", "stage.num_generations=4", "hw.micro_batch=6"], (8, 4)),
    # only where whole groups were measured to pay: not with the layout off, on CUDA (hw.micro_batch kept), DPO
    (["stage=grpo", "stage.shared_prefix=false", "hw=cpu", "stage.num_generations=8", "hw.micro_batch=2"], (2, 16)),
    (["stage=grpo", "stage.shared_prefix=true", "hw=single_4090", "stage.num_generations=8", "hw.micro_batch=4"],
     (4, 8)),
    (["stage=dpo", "stage.shared_prefix=true", "hw=cpu"], (2, 16)),
    # the embedded default's recipe: its whole batch of 4 groups in one micro-batch
    (["stage=grpo", "hw=cpu"], (32, 1)),
])
def test_shared_prefix_grpo_micro_batches_hold_whole_groups(overrides: list[str], split: tuple[int, int]) -> None:
    p = plan([*overrides, "stage.batch_size=32"])
    assert (p.micro_batch, p.grad_accum) == split


def test_chain_steps_are_planned_with_the_run(tmp_path: Path) -> None:
    p = plan(["stage=sft_then_grpo"], tmp_path)
    assert [s.stage.name for s in p.steps] == ["sft", "grpo"]
    assert [s.run_dir for s in p.steps] == [tmp_path / "1_sft", tmp_path / "2_grpo"]
    assert p.steps[1].cfg.init_from == str(tmp_path / "1_sft" / "final") and p.steps[0].cfg.init_from is None
    assert p.steps[1].sequence_tokens == 256 + p.steps[1].cfg.stage.max_completion_length
    assert all(s.cfg.eval.heldout for s in p.steps)


def test_a_chain_with_tools_leaves_held_out_accuracy_to_the_step_that_runs_them(tmp_path: Path) -> None:
    sft, grpo = plan(["experiment=calculator_sft_then_grpo_smol"], tmp_path).steps
    assert sft.cfg.env.name == "none" and not sft.cfg.eval.heldout  # without tools its own numbers read 0% -> 0%
    assert grpo.cfg.env.name == "calculator" and grpo.cfg.eval.heldout


def test_config_and_plan_are_read_only() -> None:
    p = plan([])
    with pytest.raises(FrozenConfigError, match="read-only once the run plan is resolved"):
        p.cfg.stage.learning_rate = 1.0
    with pytest.raises(FrozenConfigError):
        p.cfg.model = None
    with pytest.raises(FrozenConfigError):
        p.cfg.reward.terms["extra"] = None
    with pytest.raises(AttributeError):
        p.cfg.logging.report_to.append("wandb")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.micro_batch = 3
    # a writable copy still turns back into the typed YAML the run dir keeps
    assert OmegaConf.structured(thawed(p.cfg)).stage.name == "grpo"


def _mutating_runner(p: RunPlan) -> None:
    p.cfg.stage.batch_size = 1


def test_a_stage_that_changes_its_config_fails(tmp_path: Path) -> None:
    p = dataclasses.replace(plan([], tmp_path), stage=Stage("mutant", RunConfig, f"{__name__}:_mutating_runner"))
    with pytest.raises(FrozenConfigError, match="batch_size"):
        run_stage(p)


def test_unknown_stage_fails_where_it_is_looked_up() -> None:
    with pytest.raises(UnknownStageError, match="stage.name=ppo is not one of sft, dpo, grpo"):
        stage_spec("ppo")


def test_a_chain_refuses_keys_of_a_single_stage() -> None:
    with pytest.raises(ConfigCompositionException):
        compose_config(["stage=sft_then_grpo", "stage.learning_rate=1e-5"])


def test_logging_level_is_checked_and_applied() -> None:
    import logging

    from pipeline.config.logs import apply_log_level

    with pytest.raises(ValueError, match="logging.level=LOUD is not a log level"):
        plan(["logging.level=LOUD"])
    apply_log_level(plan(["logging.level=warning"]).cfg.logging)
    try:
        assert logging.getLogger("pipeline").level == logging.WARNING == logging.getLogger().level
    finally:
        apply_log_level(plan([]).cfg.logging)


def test_only_rank_zero_writes(tmp_path: Path) -> None:
    RunDir(tmp_path / "a", writes=False).write_json(tmp_path / "a.json", {"x": 1})
    assert not (tmp_path / "a.json").exists()
    RunDir(tmp_path).write_json(RunDir(tmp_path).summary, {"loss": float("nan")})
    assert (tmp_path / "summary.json").read_text() == '{\n  "loss": null\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_replacing_leaves_nothing_half_written(tmp_path: Path) -> None:
    target = tmp_path / "final"
    with pytest.raises(RuntimeError), replacing(target) as partial:
        partial.mkdir()
        raise RuntimeError("killed while saving")
    assert not target.exists() and (tmp_path / "final.partial").is_dir()
    with replacing(target) as partial:
        partial.mkdir()
        (partial / "model.safetensors").write_text("w")
    assert (target / "model.safetensors").exists() and not (tmp_path / "final.partial").exists()
