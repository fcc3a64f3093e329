"""Several sources into one training set: seeded row counts per source, interleaved reproducibly."""

from __future__ import annotations

import random
from typing import TypeVar

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
