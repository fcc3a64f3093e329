"""Training and held-out rows for one stage, in TRL's conversational formats.

    data = load_stage_data(cfg.data, cfg.stage.name, seed=cfg.seed)
    data.train          # Dataset in the stage's RowShape: prompt/completion, prompt/chosen/rejected, prompt/answer...
    data.eval_prompts   # Dataset of held-out {prompt, answer}, or None when the data has no answers
    data.drops          # DropReport of rows skipped under on_bad_row=skip

Order of work: read rows lazily (renaming data.columns), detect the format from the first row, convert every
row (a bad row raises or is counted, in file order), split held-out rows off, then keep `limit` rows.
`import pipeline.data` stays light: `datasets` is imported only when rows are loaded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

from pipeline.config.data_formats import ANSWER_FORMATS
from pipeline.config.enums import DataFormat, OnBadRow
from pipeline.config.stage_table import RowShape, Stage, UnknownStageError, stage_spec
from pipeline.data.arithmetic import SOURCE as ARITHMETIC
from pipeline.data.arithmetic import arithmetic_records, labeled_records
from pipeline.data.errors import BadRow, DataError, DropReport
from pipeline.data.formats import convert, resolve_format
from pipeline.data.sources import Record, is_builtin, is_local, peek_columns, read_records

if TYPE_CHECKING:
    import datasets

    from pipeline.config.schema import DataConfig

__all__ = ["DataError", "DropReport", "StageData", "load_stage_data", "peek_columns"]

log = logging.getLogger(__name__)
Rows = list[dict[str, Any]]


@dataclass
class StageData:
    train: datasets.Dataset
    # Held-out {prompt: [messages], answer: str} for accuracy; None when the held-out rows have no answer.
    eval_prompts: datasets.Dataset | None
    drops: DropReport = field(default_factory=DropReport)


def load_stage_data(data: DataConfig, stage: str, seed: int = 42) -> StageData:
    """Rows for stage `stage` (a stage table name); `seed` drives the eval_size split. Raises DataError."""
    try:
        spec = stage_spec(stage)
    except UnknownStageError as err:
        raise DataError("stage", f"unknown stage {stage!r}", str(err)) from None
    if data.limit is not None and data.limit < 1:
        raise DataError(
            "data.limit", f"limit={data.limit} keeps no rows", "use a positive limit or null", "limit"
        )
    sink = _Sink(data, DropReport())
    load = _load_builtin if is_builtin(data.path) else _load_source
    train, eval_rows = load(data, spec, seed, sink)
    if sink.drops.total:
        log.warning(sink.drops.summary())
    return StageData(_dataset(train), _dataset(eval_rows) if eval_rows else None, sink.drops)


@dataclass
class _Sink:
    """Converts records, applying on_bad_row: raise at the first bad row, or count it and go on."""

    data: DataConfig
    drops: DropReport

    def rows(
        self,
        records: Iterable[Record],
        fmt: DataFormat | None,
        view: RowShape,
        source: str,
        stop_after: int | None = None,
        counted: bool = False,
    ) -> list[tuple[Record, dict[str, Any]]]:
        """(record, converted row) pairs; `counted` records were read (and counted) by an earlier pass."""
        out, read = [], 0
        for record in records:
            if stop_after is not None and len(out) >= stop_after:
                break  # `limit` without a split-off: rows past it are never used
            read += 1
            try:
                if record.error:
                    raise record.error
                out.append((record, convert(record.row, fmt, view, self.data)))
            except BadRow as bad:
                self._bad(bad.at(record.location))
            except DataError as error:
                if error.location != record.location:
                    raise  # not about this row (e.g. a broken prompt_template): fatal in every mode
                self._bad(error)
        self.drops.note_read(source, 0 if counted else read)
        if not out:
            # Under on_bad_row=error a bad row has raised already, so every row read was dropped.
            problem = "no rows: the source is empty"
            if read:
                problem = f"no usable rows: all {read} rows read were dropped ({self.drops.summary()})"
            raise DataError(source, problem, "check the data has rows with the columns its format needs")
        return out

    def _bad(self, error: DataError) -> None:
        if OnBadRow(self.data.on_bad_row) == OnBadRow.error:
            raise error
        self.drops.add(error)


def _load_builtin(data: DataConfig, stage: Stage, seed: int, sink: _Sink) -> tuple[Rows, Rows]:
    if data.path != ARITHMETIC:
        raise DataError(data.path, "unknown built-in data set", f"use {ARITHMETIC}", "path")
    if data.eval_path or data.eval_split or data.eval_size:
        log.warning("%s holds out arithmetic.num_eval problems; data.eval_* settings are ignored", ARITHMETIC)
    # Every arithmetic row has prompt/answer/chosen/rejected, so both formats read the same rows; KTO's unpaired
    # rows are made from the pairs.
    formats = (DataFormat.preference, DataFormat.prompt_answer, DataFormat.unpaired)
    fmt = next((f for f in formats if f in stage.formats), None)
    if fmt is None:
        raise DataError(data.path, "the built-in set has no scored groups", "use a scored_groups file", "path")
    train, held_out = arithmetic_records(data.arithmetic)
    if fmt == DataFormat.unpaired:
        train = labeled_records(train)
    train_rows = sink.rows(train, fmt, stage.rows, ARITHMETIC, stop_after=data.limit)
    eval_rows = sink.rows(held_out, fmt, RowShape.answer, ARITHMETIC) if held_out else []
    return [row for _, row in train_rows], [row for _, row in eval_rows]


def _load_source(data: DataConfig, stage: Stage, seed: int, sink: _Sink) -> tuple[Rows, Rows]:
    source = data.path if is_local(data.path) else f"{data.path}[{data.split}]"
    first, records = _peek(read_records(data.path, data.split, data.subset, data.columns))
    # No parsable row at all: the sink raises the first parse error, or reports that nothing was usable.
    fmt = resolve_format(data.format, stage.name, set(first), source) if first is not None else None
    splits_off = not (data.eval_path or data.eval_split) and data.eval_size > 0
    converted = sink.rows(records, fmt, stage.rows, source, stop_after=None if splits_off else data.limit)
    has_answer = fmt in ANSWER_FORMATS
    held_out: list[Record] = []
    if splits_off:
        converted, held_out = _split(converted, data.eval_size, seed, source)
    train = [row for _, row in converted[: data.limit]]
    if not has_answer:
        if data.eval_path or data.eval_split or data.eval_size:
            log.warning("format %s has no answer column, so there is no held-out accuracy eval", fmt.value)
        return train, []
    if held_out:
        return train, [row for _, row in sink.rows(held_out, fmt, RowShape.answer, source, counted=True)]
    eval_source = _eval_source(data)
    if eval_source is None:
        return train, []
    name, eval_records = eval_source
    return train, [row for _, row in sink.rows(eval_records, fmt, RowShape.answer, name)]


def _peek(records: Iterator[Record]) -> tuple[dict[str, Any] | None, Iterator[Record]]:
    """The first parsed row, and all the records (none consumed)."""
    seen = []
    for record in records:
        seen.append(record)
        if record.row is not None:
            return record.row, chain(seen, records)
    return None, iter(seen)


def _split(
    converted: list[tuple[Record, dict[str, Any]]], size: int, seed: int, source: str
) -> tuple[list[tuple[Record, dict[str, Any]]], list[Record]]:
    """(train in file order, `size` held-out records chosen by a seeded shuffle)."""
    if size >= len(converted):
        raise DataError(
            source,
            f"data.eval_size={size} leaves no training rows ({len(converted)} usable rows)",
            "lower data.eval_size or add rows",
            "eval_size",
        )
    order = list(range(len(converted)))
    random.Random(seed).shuffle(order)
    held = set(order[:size])
    train = [pair for i, pair in enumerate(converted) if i not in held]
    return train, [converted[i][0] for i in sorted(held)]


def _eval_source(data: DataConfig) -> tuple[str, Iterator[Record]] | None:
    """(name, records) of a separate held-out file or hub split, if one is configured."""
    if data.eval_path:
        split = data.eval_split or data.split
        name = data.eval_path if is_local(data.eval_path) else f"{data.eval_path}[{split}]"
        return name, read_records(data.eval_path, split, data.subset, data.columns)
    if data.eval_split:
        if is_local(data.path):
            raise DataError(
                data.path,
                "data.eval_split only selects a split of hub data",
                "use data.eval_path for a held-out file",
                "eval_split",
            )
        return f"{data.path}[{data.eval_split}]", read_records(
            data.path, data.eval_split, data.subset, data.columns
        )
    return None


def _dataset(rows: Rows) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_list(rows)
