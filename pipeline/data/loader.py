"""Training and held-out rows for one stage, in TRL's conversational formats.

    data = load_stage_data(cfg.data, cfg.stage.name, seed=cfg.seed)
    data.train          # Dataset in the stage's RowShape: prompt/completion, prompt/chosen/rejected, prompt/answer...
    data.eval_prompts   # Dataset of held-out {prompt, answer}, or None when the data has no answers
    data.eval_rows      # the held-out rows in the training shape (eval loss), or None
    data.drops          # DropReport of rows skipped under on_bad_row=skip

Order of work: read rows lazily (renaming data.columns), detect the format from the first row, convert every
row (a bad row raises or is counted, in file order), split held-out rows off, then keep `limit` rows.
`import pipeline.data.loader` stays light: `datasets` is imported only when rows are loaded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.config.data_formats import ANSWER_FORMATS
from pipeline.config.enums import DataFormat, OnBadRow
from pipeline.config.stage_table import RowShape, Stage, UnknownStageError, stage_spec
from pipeline.data.arithmetic import SOURCE as ARITHMETIC
from pipeline.data.arithmetic import arithmetic_records, labeled_records, tool_demo_rows
from pipeline.data.errors import BadRow, BadRows, DataError, DropReport
from pipeline.data.files import Record
from pipeline.data.formats import convert, resolve_format
from pipeline.data.game_demos import SOURCE as GAME_DEMOS
from pipeline.data.game_demos import game_demo_rows
from pipeline.data.llamafactory import entry_converter
from pipeline.data.mixing import interleave, mix_sources, take
from pipeline.data.registry import entry_problem, registry_entries
from pipeline.data.sources import entry_records, file_options, is_builtin, is_local, read_records

if TYPE_CHECKING:
    import datasets

    from pipeline.config.data_schema import DataConfig, MixSourceConfig


log = logging.getLogger(__name__)
Rows = list[dict[str, Any]]
T = TypeVar("T")


@dataclass
class StageData:
    train: datasets.Dataset
    # Held-out {prompt: [messages], answer: str} for accuracy; None when the held-out rows have no answer.
    eval_prompts: datasets.Dataset | None
    drops: DropReport = field(default_factory=DropReport)
    # The same held-out rows in the stage's training shape, for the eval loss (stages with `evaluates_loss`);
    # None when nothing is held out or the stage has no loss to evaluate.
    eval_rows: datasets.Dataset | None = None
    # Rows taken from each source of a mix (registry entries, data.mix), before any held-out split; else empty.
    sources: dict[str, int] = field(default_factory=dict)


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
    sources: dict[str, int] = {}
    if data.mix or data.dataset:
        train, held, sources = _load_mix(data, spec, seed, sink)
    else:
        load = _load_builtin if is_builtin(data.path) else _load_source
        train, held = load(data, spec, seed, sink)
    if sink.drops.total:
        log.warning(sink.drops.summary())
    if sources:
        log.info("training rows per source: %s", ", ".join(f"{k}={v}" for k, v in sources.items()))
    return StageData(_dataset(train), _dataset(held.answers) if held.answers else None, sink.drops,
                     eval_rows=_dataset(held.loss_rows) if held.loss_rows else None, sources=sources)


@dataclass
class _HeldOut:
    answers: Rows = field(default_factory=list)  # {prompt, answer}: accuracy
    loss_rows: Rows = field(default_factory=list)  # the stage's row shape: eval loss


@dataclass
class _Sink:
    """Converts records, applying on_bad_row: read them all, then raise naming the bad rows; or count and go on."""

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
        converter: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> list[tuple[Record, dict[str, Any]]]:
        """(record, converted row) pairs; `counted` records were read (and counted) by an earlier pass.
        `converter` replaces the format's (registry entries bring their own)."""
        out, read, bad = [], 0, BadRows()
        for record in records:
            if stop_after is not None and len(out) >= stop_after:
                break  # `limit` without a split-off: rows past it are never used
            read += 1
            try:
                if record.error:
                    raise record.error
                row = converter(record.row) if converter else convert(record.row, fmt, view, self.data)
                out.append((record, row))
            except BadRow as row_error:
                self._bad(row_error.at(record.location), bad)
            except DataError as error:
                if error.location != record.location:
                    raise  # not about this row (e.g. a broken prompt_template): fatal in every mode
                self._bad(error, bad)
        bad.raise_any(source)
        self.drops.note_read(source, 0 if counted else read)
        if not out:
            # Under on_bad_row=error bad rows have raised already, so every row read was dropped.
            problem = "no rows: the source is empty"
            if read:
                problem = f"no usable rows: all {read} rows read were dropped ({self.drops.summary()})"
            raise DataError(source, problem, "check the data has rows with the columns its format needs")
        return out

    def held_out(
        self, records: Iterable[Record], fmt: DataFormat | None, stage: Stage, source: str, answers: bool,
        counted: bool = False,
    ) -> _HeldOut:
        """Held-out records as answer rows (if the format has answers) and as training-shape rows (eval loss).

        A record is read and counted once: the answer view converts only the records the first view kept.
        """
        held = _HeldOut()
        kept: Iterable[Record] = records
        if stage.evaluates_loss and stage.rows != RowShape.answer:
            pairs = self.rows(records, fmt, stage.rows, source, counted=counted)
            held.loss_rows = [row for _, row in pairs]
            kept, counted = [record for record, _ in pairs], True
        if answers:
            held.answers = [row for _, row in self.rows(kept, fmt, RowShape.answer, source, counted=counted)]
        return held

    def _bad(self, error: DataError, bad: BadRows) -> None:
        if OnBadRow(self.data.on_bad_row) == OnBadRow.error:
            bad.add(error)
        else:
            self.drops.add(error)


def _load_builtin(data: DataConfig, stage: Stage, seed: int, sink: _Sink) -> tuple[Rows, _HeldOut]:
    if data.path == GAME_DEMOS:
        return game_demo_rows(data.guess_number, stage), _HeldOut()
    if data.path != ARITHMETIC:
        raise DataError(data.path, "unknown built-in data set", f"use {ARITHMETIC} or {GAME_DEMOS}", "path")
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
    train_rows = [row for _, row in sink.rows(train, fmt, stage.rows, ARITHMETIC, stop_after=data.limit)]
    held = sink.held_out(held_out, fmt, stage, ARITHMETIC, answers=True) if held_out else _HeldOut()
    demos = data.arithmetic.tool_demos and stage.rows == RowShape.completion  # SFT rows only
    return tool_demo_rows(train_rows) if demos else train_rows, held


def _load_source(data: DataConfig, stage: Stage, seed: int, sink: _Sink) -> tuple[Rows, _HeldOut]:
    source = data.path if is_local(data.path) else f"{data.path}[{data.split}]"
    first, records = _peek(read_records(data.path, data.split, data.subset, data.columns, file_options(data)))
    # No parsable row at all: the sink raises the first parse error, or reports that nothing was usable.
    fmt = resolve_format(data.format, stage.name, set(first), source) if first is not None else None
    splits_off = not (data.eval_path or data.eval_split) and data.eval_size > 0
    converted = sink.rows(records, fmt, stage.rows, source, stop_after=None if splits_off else data.limit)
    has_answer = fmt in ANSWER_FORMATS
    held_out: list[Record] = []
    if splits_off:
        converted, held_pairs = _split(converted, data.eval_size, seed, source)
        held_out = [record for record, _ in held_pairs]
    train = [row for _, row in converted[: data.limit]]
    if not has_answer and (data.eval_path or data.eval_split or data.eval_size):
        loss = " (its held-out rows give the eval loss)" if stage.evaluates_loss else ""
        log.warning("format %s has no answer column, so there is no held-out accuracy eval%s", fmt.value, loss)
    if held_out:
        return train, sink.held_out(held_out, fmt, stage, source, has_answer, counted=True)
    eval_source = _eval_source(data)
    if eval_source is None or not (has_answer or stage.evaluates_loss):
        return train, _HeldOut()
    name, eval_records = eval_source
    return train, sink.held_out(eval_records, fmt, stage, name, has_answer)


def _load_mix(data: DataConfig, stage: Stage, seed: int, sink: _Sink) -> tuple[Rows, _HeldOut, dict[str, int]]:
    """data.mix (files, hub names, registry entries) or the registry names of data.dataset: each source converted
    on its own (format detected per file; entries by their columns/tags), cut to its share, interleaved."""
    parts, counts = [], {}
    for source in mix_sources(data):
        name, rows, default = _source_rows(source, data, stage, sink)
        rows = take(rows, source, default, seed)
        parts.append(rows)
        counts[name] = counts.get(name, 0) + len(rows)
    train = interleave(parts, seed)
    held = _HeldOut()
    # Mixed rows are converted to the training shape already: held out as answers (GRPO) or for the eval loss.
    if data.eval_size and (stage.rows == RowShape.answer or stage.evaluates_loss):
        train, rows = _split(train, data.eval_size, seed, "the mixed sources")
        if stage.rows == RowShape.answer:
            held.answers = rows
        else:
            held.loss_rows = rows
    elif data.eval_size or data.eval_path or data.eval_split:
        log.warning("mixed sources hold out rows (data.eval_size) only for stages that train on answers or "
                    "evaluate a loss")
    return train[: data.limit], held, counts


def _source_rows(source: MixSourceConfig, data: DataConfig, stage: Stage, sink: _Sink) -> tuple[str, Rows, int | None]:
    """(name, converted rows, default row count) of one mixed source."""
    if source.dataset:
        (entry,) = registry_entries(data, [source.dataset])
        problem = entry_problem(entry, stage.rows, stage.name)
        if problem:
            raise DataError(entry.source, problem, "name entries that fit this stage, or run the stage they fit",
                            "dataset")
        converter = entry_converter(entry, stage.rows, data)
        pairs = sink.rows(entry_records(entry, data), None, stage.rows, entry.source, converter=converter)
        return entry.name, [row for _, row in pairs], entry.num_samples
    where = source.path if is_local(source.path) else f"{source.path}[{source.split}]"
    records = read_records(source.path, source.split, source.subset, source.columns, file_options(data))
    first, records = _peek(records)
    fmt = resolve_format(data.format, stage.name, set(first), where) if first is not None else None
    return source.path, [row for _, row in sink.rows(records, fmt, stage.rows, where)], None


def _peek(records: Iterator[Record]) -> tuple[dict[str, Any] | None, Iterator[Record]]:
    """The first parsed row, and all the records (none consumed)."""
    seen = []
    for record in records:
        seen.append(record)
        if record.row is not None:
            return record.row, chain(seen, records)
    return None, iter(seen)


def _split(items: list[T], size: int, seed: int, source: str) -> tuple[list[T], list[T]]:
    """(train in source order, `size` held-out items chosen by a seeded shuffle, in source order)."""
    if size >= len(items):
        raise DataError(source, f"data.eval_size={size} leaves no training rows ({len(items)} usable rows)",
                        "lower data.eval_size or add rows", "eval_size")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = set(order[:size])
    return [x for i, x in enumerate(items) if i not in held], [items[i] for i in sorted(held)]


def _eval_source(data: DataConfig) -> tuple[str, Iterator[Record]] | None:
    """(name, records) of a separate held-out file or hub split, if one is configured."""
    if data.eval_path:
        split = data.eval_split or data.split
        name = data.eval_path if is_local(data.eval_path) else f"{data.eval_path}[{split}]"
        return name, read_records(data.eval_path, split, data.subset, data.columns, file_options(data))
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

    # from_list takes its columns from the first row: a column only some rows have (tools) is filled with None.
    keys = list(dict.fromkeys(k for row in rows for k in row))
    if any(len(row) != len(keys) for row in rows):
        rows = [{k: row.get(k) for k in keys} for row in rows]
    return datasets.Dataset.from_list(rows)
