"""Built-in arithmetic data set: "What is 47 + 38? Answer with just the number.", generated from a seed.

Problems are drawn one at a time without repeats and the first `num_eval` are held out, so the eval problems
depend only on seed/ops/low/high: changing num_train never changes them, which keeps accuracies comparable
across runs. Each row carries every view's columns: prompt, answer (sft completion / grpo answer), chosen and
rejected (dpo; rejected = the answer plus a nonzero offset in [-10, 10]); `labeled_records` makes KTO's unpaired
rows from them.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable

from pipeline.config.data_schema import ArithmeticConfig
from pipeline.data.errors import DataError
from pipeline.data.files import Record

SOURCE = "builtin:arithmetic"
OPS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_OFFSETS = [d for d in range(-10, 11) if d]


def arithmetic_records(cfg: ArithmeticConfig) -> tuple[list[Record], list[Record]]:
    """(train, eval) records of the built-in set; disjoint, without duplicates."""
    ops = _check(cfg)
    rng = random.Random(cfg.seed)
    seen: set[tuple[int, str, int]] = set()
    rows = []
    while len(rows) < cfg.num_eval + cfg.num_train:
        second = (cfg.low if cfg.low_b is None else cfg.low_b, cfg.high if cfg.high_b is None else cfg.high_b)
        problem = (rng.randint(cfg.low, cfg.high), rng.choice(ops), rng.randint(*second))
        if problem not in seen:
            seen.add(problem)
            rows.append(_row(*problem, offset=rng.choice(_OFFSETS)))
    eval_rows = [Record(f"{SOURCE}[eval] row {i}", row) for i, row in enumerate(rows[: cfg.num_eval], 1)]
    train_rows = [Record(f"{SOURCE}[train] row {i}", row) for i, row in enumerate(rows[cfg.num_eval :], 1)]
    return train_rows, eval_rows


def tool_demo_rows(rows: list[dict]) -> list[dict]:
    """SFT rows ({prompt, completion: answer}) as calculator tool-use demonstrations: a call to calculate with the
    question's expression, its result as a tool turn, the result as the answer; `tools` holds calculate's schema
    (the schema GRPO's rollouts render), so the demonstration reads exactly as a rollout that used the tool."""
    import json
    import re

    from transformers.utils import get_json_schema

    from pipeline.envs.calculator import calculate

    tools = json.dumps([get_json_schema(calculate)])
    out = []
    for row in rows:
        question = row["prompt"][-1]["content"]
        expression = re.match(r"What is (.+?)\?", question).group(1)
        call = {"type": "function", "function": {"name": "calculate", "arguments": {"expression": expression}}}
        result = calculate(expression)
        out.append({"prompt": row["prompt"], "tools": tools, "completion": [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": "calculate", "content": result},
            {"role": "assistant", "content": row["completion"] if isinstance(row["completion"], str) else result}]})
    return out


def labeled_records(records: list[Record]) -> list[Record]:
    """KTO's unpaired view: each problem's chosen answer as a desirable row and its rejected one as an undesirable
    row. Two passes of alternating labels, shifted by one problem, so neighbouring rows never share a prompt (KTO
    estimates its KL term from each row's neighbour in the batch) and every batch mixes both labels."""
    out = []
    for shift in (0, 1):
        for i, record in enumerate(records):
            desirable = (i + shift) % 2 == 0
            completion = record.row["chosen" if desirable else "rejected"]
            row = {"prompt": record.row["prompt"], "completion": completion, "label": desirable}
            out.append(Record(f"{record.location} ({'chosen' if desirable else 'rejected'})", row))
    return out


def _row(a: int, op: str, b: int, offset: int) -> dict[str, str]:
    answer = OPS[op](a, b)
    return {
        "prompt": f"What is {a} {op} {b}? Answer with just the number.",
        "answer": str(answer),
        "chosen": str(answer),
        "rejected": str(answer + offset),
    }


def _check(cfg: ArithmeticConfig) -> list[str]:
    """The distinct operators; raises DataError when the request cannot be met."""
    ops = list(dict.fromkeys(cfg.ops))  # dedupe, keeping order, so each operator is equally likely
    unknown = [op for op in ops if op not in OPS]
    if not ops or unknown:
        raise DataError(
            SOURCE,
            f"unsupported operators {unknown or '(none)'}",
            f"use a non-empty subset of {list(OPS)}",
            "arithmetic.ops",
        )
    if cfg.low > cfg.high:
        raise DataError(SOURCE, f"low={cfg.low} is above high={cfg.high}", "swap them", "arithmetic.low")
    if (cfg.low_b if cfg.low_b is not None else cfg.low) > (cfg.high_b if cfg.high_b is not None else cfg.high):
        raise DataError(SOURCE, f"low_b={cfg.low_b} is above high_b={cfg.high_b}", "swap them", "arithmetic.low_b")
    if cfg.num_train < 1 or cfg.num_eval < 0:
        raise DataError(
            SOURCE,
            f"num_train={cfg.num_train}, num_eval={cfg.num_eval}",
            "use num_train >= 1 and num_eval >= 0",
            "arithmetic.num_train",
        )
    distinct = (cfg.high - cfg.low + 1) ** 2 * len(ops)
    wanted = cfg.num_train + cfg.num_eval
    if wanted > distinct:
        raise DataError(
            SOURCE,
            f"{wanted} problems requested (num_train + num_eval) but only {distinct} distinct "
            f"ones exist for ops {ops} in [{cfg.low}, {cfg.high}]",
            "lower num_train/num_eval, widen low..high or add ops",
            "arithmetic.num_train",
        )
    return ops
