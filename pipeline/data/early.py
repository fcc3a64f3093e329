"""A run's rows read and checked before torch is imported, so a missing file or a bad row fails in about a second
(it took 7-10 s of torch/TRL/peft imports on 2 cores when the stage loaded them first).

pipeline/run.py calls `load_early` for a single-stage run; the stage's prepare() then takes the same rows through
`stage_data` instead of reading them again. A chain loads each step's rows in its own prepare().
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.data.loader import StageData, load_stage_data

if TYPE_CHECKING:
    from pipeline.config.data_schema import DataConfig

_LOADED: dict[tuple[str, str, int], StageData] = {}


def load_early(data: DataConfig, stage: str, seed: int) -> None:
    _LOADED[_key(data, stage, seed)] = load_stage_data(data, stage, seed)


def stage_data(data: DataConfig, stage: str, seed: int) -> StageData:
    """The rows `load_early` read for these settings (handed over once), else read now."""
    found = _LOADED.pop(_key(data, stage, seed), None)
    return found if found is not None else load_stage_data(data, stage, seed)


def _key(data: DataConfig, stage: str, seed: int) -> tuple[str, str, int]:
    return repr(data), stage, seed
