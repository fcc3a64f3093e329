"""Rows longer than the stage's max_length: TRL truncates them silently (and drops a row whose completion is cut
off entirely), so they are counted and reported before training, or dropped and counted under
data.on_bad_row=skip.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.data.errors import DataError
from pipeline.train.model.templates import chat_ids

log = logging.getLogger(__name__)


def row_lengths(rows: Any, tokenizer: Any) -> list[int]:
    """Tokens of each row as the trainer will see it (prompt + the longest completion/chosen/rejected)."""
    lengths = []
    for row in rows:
        answers = [row[k] for k in ("completion", "chosen", "rejected") if k in row] or [[]]
        tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else None
        lengths.append(max(_tokens(tokenizer, row["prompt"], answer, tools) for answer in answers))
    return lengths


def _tokens(tokenizer: Any, prompt: Any, completion: Any, tools: list | None = None) -> int:
    if isinstance(prompt, list):
        # the tool schemas are part of the rendered sequence (TRL renders them into the system turn)
        return len(chat_ids(tokenizer, list(prompt) + list(completion or []), tools=tools))
    return len(tokenizer(str(prompt) + str(completion or ""), add_special_tokens=False)["input_ids"])


def long_rows(rows: Any, tokenizer: Any, max_length: int, skip: bool, drops: Any) -> tuple[Any, int]:
    """Report (or, when skipping bad rows, drop and count) rows over `max_length` tokens: TRL truncates them
    silently. Returns (rows to train on, number of rows over the limit)."""
    lengths = row_lengths(rows, tokenizer)
    over = [i for i, n in enumerate(lengths) if n > max_length]
    if not over:
        return rows, 0
    first = over[0]
    fix = f"raise stage.max_length (longest row: {max(lengths)} tokens) or shorten those rows"
    if len(over) == len(lengths):
        # TRL would cut every completion off and drop every row: an empty run that fails far from the cause.
        raise DataError("training data", f"every training row is longer than stage.max_length={max_length} tokens "
                        f"(shortest: {min(lengths)})", fix, field=None)
    message = (f"{len(over)} of {len(rows)} training rows are longer than stage.max_length={max_length} tokens "
               f"(first: training row {first + 1}, {lengths[first]} tokens)")
    if not skip:
        log.warning("%s; TRL truncates them (their ends are not trained on; a row whose completion is cut off "
                    "entirely is dropped). Fix: %s, or "
                    "data.on_bad_row=skip to drop them.", message, fix)
        return rows, len(over)
    for i in over:
        drops.add(DataError(f"training row {i + 1}", f"{lengths[i]} tokens > stage.max_length={max_length}", fix,
                            reason=f"longer than stage.max_length={max_length}"))
    log.warning("%s: dropped (data.on_bad_row=skip). Fix: %s.", message, fix)
    keep = sorted(set(range(len(rows))) - set(over))
    return rows.select(keep), len(over)
