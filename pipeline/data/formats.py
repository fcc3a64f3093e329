"""Input-format detection and the row converters into TRL's conversational formats.

A converter turns one renamed input row into the row shape a stage trains on (`RowShape`: prompt + completion,
prompt + chosen + rejected, prompt + answer, or a ranked group) or raises `BadRow` naming the field and the fix;
the caller adds the location. The held-out accuracy view is the answer shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.config.data_formats import REQUIRED
from pipeline.config.enums import DataFormat
from pipeline.config.stage_table import RowShape, stage_spec
from pipeline.data.errors import DataError
from pipeline.data.rows import _alpaca_prompt, _assistant, _from_messages, _label, _prompt, _text
from pipeline.data.seed_formats import CONVERTERS

if TYPE_CHECKING:
    from pipeline.config.data_schema import DataConfig

# question/answer columns are too common to mean GSM8K: that format is used only when data.format says so.
_EXPLICIT_ONLY = (DataFormat.gsm8k,)
_SEED_FORMATS = (
    DataFormat.sharegpt, DataFormat.llamafactory_dpo, DataFormat.gsm8k, DataFormat.s1k, DataFormat.mcq,
    DataFormat.scored_groups,
)
# Column that becomes the SFT completion, per format (messages rows carry their own).
_SFT_TARGET = {
    DataFormat.alpaca: "output",
    DataFormat.prompt_completion: "completion",
    DataFormat.prompt_answer: "answer",
    DataFormat.unpaired: "completion",
}


def _needs(formats: Sequence[DataFormat]) -> str:
    return " | ".join(f"{f.value}: {'/'.join(REQUIRED[f])}" for f in formats)


def _explicit(stage: str) -> list[str]:
    return [f.value for f in stage_spec(stage).formats if f in _EXPLICIT_ONLY] or ["a format the stage accepts"]


def resolve_format(fmt: DataFormat | str, stage: str, columns: set[str], source: str) -> DataFormat:
    """The configured format, or for auto the first one the stage accepts whose columns the first row has."""
    fmt = DataFormat(fmt)
    accepted = stage_spec(stage).formats
    if fmt != DataFormat.auto:
        if fmt not in accepted:
            problem = f"stage {stage} cannot train on format {fmt.value}; it needs {_needs(accepted)}"
            raise DataError(source, problem, "set data.format to one of those or use another stage", "format")
        return fmt
    match = next((f for f in accepted if set(REQUIRED[f]) <= columns and f not in _EXPLICIT_ONLY), None)
    if match:
        return match
    found = sorted(columns)
    if any(set(cols) <= columns for f, cols in REQUIRED.items() if f not in _EXPLICIT_ONLY):
        wanted = " or ".join("/".join(REQUIRED[f]) for f in accepted if f not in _SEED_FORMATS)
        example = ", ".join(f"yours: {c}" for c in REQUIRED[accepted[0]][-2:])
        seed = [f.value for f in accepted if f in _SEED_FORMATS]
        also = f", or set data.format to one of {', '.join(seed)}" if seed else ""
        problem = f"stage {stage} needs {wanted} columns; found {found}"
        raise DataError(source, problem, f"provide them or map yours with data.columns={{{example}, ...}}{also}")
    problem = f"no data format matches the first row's columns {found}; formats need {_needs(list(REQUIRED))}"
    fix = "rename columns with data.columns (e.g. {question: prompt}) or set them"
    raise DataError(source, problem, f"{fix}; or set data.format to one of {', '.join(_explicit(stage))}")


def convert(row: dict[str, Any], fmt: DataFormat, view: RowShape, data: DataConfig) -> dict[str, Any]:
    """One input row in the `view` row shape; raises BadRow for a bad row."""
    if fmt in CONVERTERS:
        return CONVERTERS[fmt](row, view, data)
    if fmt == DataFormat.messages:
        return _from_messages(row, data)
    prompt = _alpaca_prompt(row, data) if fmt == DataFormat.alpaca else _prompt(row, data)
    if view == RowShape.preference:
        return {"prompt": prompt, **{f: _assistant(row, f) for f in ("chosen", "rejected")}}
    if view == RowShape.answer:
        return {"prompt": prompt, "answer": _text(row, "answer")}
    if view == RowShape.labeled:
        return {"prompt": prompt, "completion": _assistant(row, "completion"), "label": _label(row)}
    return {"prompt": prompt, "completion": _assistant(row, _SFT_TARGET[fmt])}


