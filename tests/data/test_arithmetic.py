"""The built-in arithmetic data: stage views, determinism, the eval set, the template and bad settings."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipeline.config.data_schema import ArithmeticConfig, DataConfig
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from tests.helpers.data import cfg, reply


def arith(**kw: Any) -> DataConfig:
    return cfg("builtin:arithmetic", arithmetic=ArithmeticConfig(**kw))


def solve(prompt: list[dict[str, str]]) -> tuple[int, str, int, int]:
    m = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\? Answer with just the number\.", prompt[-1]["content"])
    assert m, prompt
    a, op, b = int(m[1]), m[2], int(m[3])
    return a, op, b, {"+": a + b, "-": a - b, "*": a * b}[op]


@pytest.mark.parametrize(
    "stage, columns",
    [
        ("sft", {"prompt", "completion"}),
        ("dpo", {"prompt", "chosen", "rejected"}),
        ("grpo", {"prompt", "answer"}),
    ],
)
def test_arithmetic_views(stage: str, columns: set[str]) -> None:
    data = arith(num_train=20, num_eval=5, ops=["+", "-", "*"])
    data.system_prompt = "Be brief."
    out = load_stage_data(data, stage)
    assert set(out.train.column_names) == columns
    assert (len(out.train), len(out.eval_prompts), out.drops.total) == (20, 5, 0)
    assert set(out.eval_prompts.column_names) == {"prompt", "answer"}
    for row in out.train:
        assert row["prompt"][0] == {"role": "system", "content": "Be brief."}
        result = str(solve(row["prompt"])[3])
        if stage == "sft":
            assert row["completion"] == reply(result)
        elif stage == "dpo":
            assert row["chosen"] == reply(result)
            assert 1 <= abs(int(row["rejected"][0]["content"]) - int(result)) <= 10
        else:
            assert row["answer"] == result


def test_arithmetic_is_deterministic_distinct_and_disjoint() -> None:
    data = arith(num_train=300, num_eval=50, ops=["+", "-"], low=1, high=20, seed=7)
    first, again = load_stage_data(data, "grpo"), load_stage_data(data, "grpo")
    assert first.train.to_list() == again.train.to_list()
    train = [solve(r["prompt"])[:3] for r in first.train]
    held = [solve(r["prompt"])[:3] for r in first.eval_prompts]
    assert len(set(train)) == 300 and len(set(held)) == 50 and not set(train) & set(held)
    assert {op for _, op, _ in train} == {"+", "-"}
    assert all(1 <= a <= 20 and 1 <= b <= 20 for a, _, b in train + held)
    assert [r["answer"] for r in first.eval_prompts] == [
        str(solve(r["prompt"])[3]) for r in first.eval_prompts
    ]


def test_arithmetic_eval_set_ignores_num_train_and_limit() -> None:
    small = load_stage_data(arith(num_train=10, num_eval=8), "sft")
    limited = arith(num_train=500, num_eval=8)
    limited.limit = 3
    big = load_stage_data(limited, "sft")
    assert small.eval_prompts.to_list() == big.eval_prompts.to_list()
    assert len(big.train) == 3 and big.train.to_list() == small.train.to_list()[:3]


def test_arithmetic_template_and_exhaustive_draw() -> None:
    # 2 x 2 operands x 1 op = 4 distinct problems: all of them must come out, each once.
    data = arith(num_train=3, num_eval=1, low=1, high=2)
    data.prompt_template = "Q: {prompt}"
    out = load_stage_data(data, "grpo")
    contents = [r["prompt"][0]["content"] for r in out.train] + [out.eval_prompts[0]["prompt"][0]["content"]]
    assert sorted(contents) == sorted(
        f"Q: What is {a} + {b}? Answer with just the number." for a in (1, 2) for b in (1, 2)
    )
    assert all(len(r["prompt"]) == 1 for r in out.train)  # no system_prompt -> no system turn


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            dict(num_train=4, num_eval=1, low=1, high=2),
            "5 problems requested (num_train + num_eval) but only 4",
        ),
        (dict(ops=["/"]), "field 'arithmetic.ops': unsupported operators ['/']"),
        (dict(low=5, high=1), "field 'arithmetic.low': low=5 is above high=1"),
    ],
)
def test_arithmetic_bad_settings(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        load_stage_data(arith(**kw), "sft")
