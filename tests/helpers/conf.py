"""conf/'s groups and their options, as the tests that go through every option list them."""

from __future__ import annotations

from tests.helpers.runs import CONF

# experiment and hparams_search write into the whole config (`# @package _global_`): each has its own tests
GROUPS = sorted(p.name for p in CONF.iterdir()
                if p.is_dir() and p.name not in ("stage_data", "experiment", "hparams_search"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))
