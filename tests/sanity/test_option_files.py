"""Option files hold only what differs: no key restates its schema default or its parent option's value."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig, OmegaConf

from pipeline.config.schema import SCHEMAS
from tests.helpers.conf import GROUPS, options
from tests.helpers.runs import CONF


def _inherited(group: str, path) -> DictConfig:
    """What an option file's own keys override: its schema's defaults with its parent options merged on top."""
    node = OmegaConf.create({})
    for entry in OmegaConf.load(path).get("defaults", []):
        if not isinstance(entry, str) or entry == "_self_":
            continue  # `override /zero@...` entries configure another group
        if entry in SCHEMAS[group]:
            node = OmegaConf.merge(node, OmegaConf.structured(SCHEMAS[group][entry]))
        else:
            parent = OmegaConf.load(CONF / group / f"{entry}.yaml")
            parent.pop("defaults", None)
            node = OmegaConf.merge(node, _inherited(group, CONF / group / f"{entry}.yaml"), parent)
    return node


def _repeats(own: dict, inherited: DictConfig, prefix: str = "") -> list[str]:
    found = []
    for key, value in own.items():
        if key not in inherited:
            continue
        base = OmegaConf.to_container(inherited, resolve=False)[key]
        if isinstance(value, dict) and isinstance(base, dict) and value and base:
            found += _repeats(value, inherited[key], f"{prefix}{key}.")
        elif value == (base.value if hasattr(base, "value") else base):
            found.append(prefix + key)
    return found


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x))
def test_option_files_hold_only_what_differs_from_the_schema(group: str, option: str) -> None:
    path = CONF / group / f"{option}.yaml"
    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    own.pop("defaults", None)
    repeated = _repeats(own, _inherited(group, path))
    assert not repeated, f"{path.name} repeats the schema default (or its parent's value) of {repeated}: drop them"
