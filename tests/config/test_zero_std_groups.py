"""stage.zero_std_groups: keep by default; skip and resample refused, naming the fix, where they cannot keep the
loss's meaning or cannot run (pipeline/config/grpo_checks.py)."""

from __future__ import annotations

import pytest

from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.enums import ZeroStdGroups
from tests.helpers.runs import compose_config


def _run_config(*overrides: str):
    return to_run_config(compose_config(["model=tiny", *overrides]))


def test_keep_is_the_default_and_skip_and_resample_compose() -> None:
    assert _run_config().stage.zero_std_groups == ZeroStdGroups.keep
    assert _run_config("stage.zero_std_groups=skip", "hw=cpu_2proc").stage.zero_std_groups == ZeroStdGroups.skip
    cfg = _run_config("stage.zero_std_groups=resample", "stage.resample_tries=3")
    assert cfg.stage.zero_std_groups == ZeroStdGroups.resample and cfg.stage.resample_tries == 3


@pytest.mark.parametrize(("overrides", "message"), [
    (["stage.zero_std_groups=resample", "hw=cpu_2proc"], "only one process is supported"),
    (["stage.zero_std_groups=resample", "stage.resample_tries=0"], "stage.resample_tries=0"),
    (["stage.zero_std_groups=resample", "stage.scale_rewards=batch"], "stage.scale_rewards=group"),
    (["stage.zero_std_groups=skip", "+stage.trl.multi_objective_aggregation=normalize_then_sum"],
     "non-zero advantage"),
    (["stage.zero_std_groups=skip", "+stage.trl.entropy_coef=0.01"], "per micro-batch"),
])
def test_combinations_that_cannot_work_are_refused_with_the_fix(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _run_config(*overrides)
    assert message in str(err.value) and "stage.zero_std_groups=" in str(err.value)


def test_an_unknown_mode_fails_at_compose_time() -> None:
    with pytest.raises(Exception, match="zero_std_groups"):
        compose_config(["model=tiny", "stage.zero_std_groups=drop"])
