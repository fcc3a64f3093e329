"""conf/'s groups and their options, as the tests that go through every option list them."""

from __future__ import annotations

from tests.helpers.runs import CONF

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("stage_data", "experiment"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))
