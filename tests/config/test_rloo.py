"""stage=rloo's config: its knobs are RLOOConfig fields, GRPO's presets and tools are refused with the reason, and
it chains like GRPO. That the values reach the trainer TRL builds is read back from a real run
(tests/e2e/test_stages.py)."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.derived import chain_steps
from pipeline.config.stage_schemas import RLOOStageConfig, StageConfig
from pipeline.config.stage_table import stage_spec
from pipeline.config.trl_fields import config_fields
from tests.helpers.runs import compose_config

# our keys that are not RLOOConfig fields of the same name (train/stages/grpo.py: generation_engine maps them)
OURS_ONLY = {"generation", "vllm_gpu_memory_utilization"}


def _run_config(*overrides: str):
    return to_run_config(compose_config(["model=tiny", "stage=rloo", *overrides]))


def test_every_rloo_knob_is_an_rloo_config_field_of_the_same_name() -> None:
    # a renamed or misspelled knob (e.g. normalise_advantages) would never reach TRL: this catches it before a run
    own = {f.name for f in fields(RLOOStageConfig)} - {f.name for f in fields(StageConfig)} - OURS_ONLY
    assert own and own <= config_fields(stage_spec("rloo").trl_config), own - config_fields("trl:RLOOConfig")


def test_rloo_composes_with_the_arithmetic_settings_and_trl_defaults() -> None:
    s = _run_config().stage
    assert (s.name, s.num_generations, s.batch_size, s.max_completion_length) == ("rloo", 8, 32, 16)
    assert (s.beta, s.normalize_advantages, s.learning_rate, s.lr_scheduler) == (0.05, False, 3e-4, "constant")


def test_grpo_presets_do_not_compose_with_rloo() -> None:
    # conf/algo/ sets loss_type, which RLOOTrainer has no counterpart of: Hydra names the key
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["stage=rloo", "algo=dapo"])
    assert "In 'algo/dapo'" in str(err.value) and "Key 'loss_type' not in 'RLOOStageConfig'" in str(err.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["env=calculator"], "tools and environments run inside GRPO's rollouts only (TRL's RLOOTrainer has no"),
    (["stage.num_generations=1"], "stage.num_generations=1"),
    (["stage.batch_size=30"], "is not divisible by stage.num_generations=8"),
    (["++stage.trl.normalize_advantages=true"], "set by our key stage.normalize_advantages"),
    (["++stage.trl.loss_type=dapo"], "RLOOConfig (TRL installed here) has no field loss_type"),
])
def test_rloo_mistakes_are_refused_before_anything_loads(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _run_config(*overrides)
    assert message in str(err.value)


def test_rloo_is_a_step_of_a_chain_after_sft() -> None:
    sft, rloo = chain_steps(_run_config("stage=chain", "stage.stages=[sft,rloo]"))
    assert rloo.stage.name == "rloo" and rloo.init_from == sft.output_dir + "/final"
