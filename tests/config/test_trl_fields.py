"""What validation believes the installed TRL / transformers accept, checked against the libraries themselves.

Validation reads field names and enum values from the installed source files (no import: pipeline/config/
trl_fields.py); these tests import the real classes, so a TRL upgrade that moves a field, adds a loss or drops
one fails here instead of letting a name pass validation and fail after the model loads.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config.enums import CPOLoss, DPOLoss, GRPOLoss, ImportanceSampling, KTOLoss, RewardScaling
from pipeline.config.stage_table import STAGES
from pipeline.config.trl_checks import OPTIMIZERS, OWNED, SCHEDULERS
from pipeline.config.trl_fields import config_fields, enum_values
from tests.helpers.runs import REPO, compose_config, offline_env

TRL_CONFIGS = sorted({s.trl_config for s in STAGES.values() if s.trl_config})


def _load(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("ref", TRL_CONFIGS)
def test_fields_read_from_source_are_the_dataclass_fields(ref: str) -> None:
    real = {f.name for f in dataclasses.fields(_load(ref)) if f.init}
    assert config_fields(ref) == real


@pytest.mark.parametrize("ref", [SCHEDULERS, OPTIMIZERS])
def test_enum_values_read_from_source_are_the_enum_values(ref: str) -> None:
    assert enum_values(ref) == tuple(e.value for e in _load(ref))


def _compared(source: str, key: str) -> set[str]:
    """Every string a TRL method compares `key` with (`key == "x"`, `key in ["x", "y"]`)."""
    found = set(re.findall(rf'{key} == "(\w+)"', source))
    for group in re.findall(rf"{key} in \[([^\]]*)\]", source):
        found |= set(re.findall(r'"(\w+)"', group))
    return found


def test_grpo_names_are_those_grpo_trainer_branches_on() -> None:
    from trl import GRPOTrainer

    source = inspect.getsource(GRPOTrainer)
    assert {e.value for e in GRPOLoss} == _compared(source, "loss_type")
    assert {e.value for e in ImportanceSampling} == _compared(source, "importance_sampling_level")
    # "group" is the default branch (the std of each group); batch and none are compared by name
    assert {e.value for e in RewardScaling} - {"group"} <= _compared(source, "scale_rewards") | {"none"}


def test_preference_loss_names_are_the_trainers_names() -> None:
    from trl import DPOTrainer, KTOConfig
    from trl.experimental.cpo import CPOConfig

    assert {e.value for e in DPOLoss} == _compared(inspect.getsource(DPOTrainer), "loss_type")
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(KTOConfig)}
    assert {e.value for e in KTOLoss} == set(choices["loss_type"])
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(CPOConfig)}
    assert {e.value for e in CPOLoss} == set(choices["loss_type"])


def test_every_training_argument_we_set_is_refused_in_stage_trl(tmp_path: Path) -> None:
    from pipeline.config.plan import plan_run
    from pipeline.train.stages.trl_args import training_args

    plan = plan_run(compose_config(["model=tiny", "stage=sft"]), tmp_path)
    ours = set(training_args(plan))
    schema = {f.name for f in dataclasses.fields(type(plan.cfg.stage))}
    assert ours - set(OWNED) - schema == set()


def test_validation_reads_trl_without_importing_it() -> None:
    """The stage.trl check must not pull in torch/TRL (seconds) before the config is known to be good."""
    code = (
        "import sys, time\n"
        "from tests.helpers.runs import compose_config\n"
        "from pipeline.config.checks import to_run_config\n"
        "cfg = compose_config(['++stage.trl.delta=1.5', 'stage.lr_scheduler=linear'])\n"
        "start = time.perf_counter(); run = to_run_config(cfg); took = time.perf_counter() - start\n"
        "assert run.stage.trl == {'delta': 1.5}\n"
        "print('heavy', sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules), 'took', took)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=offline_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "heavy [] took" in proc.stdout, proc.stdout
