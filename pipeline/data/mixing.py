"""Several sources into one training set: seeded row counts per source, interleaved reproducibly."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, TypeVar

from pipeline.config.stage_table import RowShape
from pipeline.data.registry import dataset_names, registry_problems

if TYPE_CHECKING:
    from pipeline.config.data_schema import DataConfig, MixSourceConfig

T = TypeVar("T")


def sample(rows: list[T], n: int | None, seed: int) -> list[T]:
    """`n` rows of a source (LLaMA-Factory's num_samples): a seeded subset, or every row repeated and then a seeded
    subset when `n` is larger; None keeps them all in order."""
    if n is None or n == len(rows):
        return rows
    rng = random.Random(seed)
    whole, part = divmod(n, len(rows))
    return rows * whole + [rows[i] for i in sorted(rng.sample(range(len(rows)), part))]


def interleave(sources: list[list[T]], seed: int) -> list[T]:
    """Every row of every source, each source in its own order, the sources interleaved by a seeded shuffle of
    their row slots (a source with twice the rows appears twice as often throughout, not in one block)."""
    slots = [i for i, rows in enumerate(sources) for _ in rows]
    random.Random(seed).shuffle(slots)
    cursors = [iter(rows) for rows in sources]
    return [next(cursors[i]) for i in slots]


def mix_sources(data: DataConfig) -> list[MixSourceConfig]:
    """data.mix, or one source per registry name of data.dataset."""
    from pipeline.config.data_schema import MixSourceConfig

    return list(data.mix) or [MixSourceConfig(dataset=name) for name in dataset_names(data)]


def take(rows: list[T], source: MixSourceConfig, default: int | None, seed: int) -> list[T]:
    """The rows a source contributes: num_samples, weight x its rows, or `default` (None: all)."""
    n = source.num_samples if source.num_samples is not None else default
    if source.weight is not None:
        n = max(1, round(source.weight * len(rows)))
    return sample(rows, n, seed)


def mix_problems(data: DataConfig, stage: str, needs: RowShape | None) -> list[str]:
    """Validation of data.mix: each source names one thing and one amount; registry entries fit the stage."""
    problems, names = [], []
    for i, source in enumerate(data.mix, 1):
        where = f"data.mix[{i}]"
        if bool(source.path) == bool(source.dataset):
            problems.append(f"{where}: give exactly one of path (a file or hub name) and dataset (a registry entry).")
        if source.weight is not None and source.num_samples is not None:
            problems.append(f"{where}: give weight or num_samples, not both.")
        if source.weight is not None and source.weight <= 0:
            problems.append(f"{where}: weight={source.weight} takes no rows; use a positive multiplier (1 = all).")
        if source.num_samples is not None and source.num_samples < 1:
            problems.append(f"{where}: num_samples={source.num_samples} takes no rows; use a positive count.")
        if source.dataset:
            names.append(source.dataset)
    if names:
        from dataclasses import replace

        problems += registry_problems(replace(data, dataset=",".join(names), mix=[]), stage, needs)
    return problems
