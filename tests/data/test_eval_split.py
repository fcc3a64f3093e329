"""Held-out data: the seeded eval split, eval_path, limits, and bad eval settings and rows."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.enums import OnBadRow
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from tests.helpers.data import DATA, cfg, reply, user, write_lines

QA = {"prompt": "q", "answer": "1"}


def numbered(tmp_path: Path, n: int, name: str = "d.jsonl") -> Path:
    return write_lines(tmp_path, name, [{"prompt": f"q{i}", "answer": i} for i in range(n)])


def prompts(ds: Any) -> list[str]:
    return [r["prompt"][-1]["content"] for r in ds]


def test_eval_size_split_is_seeded_disjoint_and_limit_applies_after(tmp_path: Path) -> None:
    data = cfg(numbered(tmp_path, 20), eval_size=5)
    a, b, c = (load_stage_data(data, "grpo", seed=s) for s in (1, 1, 2))
    assert prompts(a.eval_prompts) == prompts(b.eval_prompts) != prompts(c.eval_prompts)
    assert len(a.eval_prompts) == 5 and len(a.train) == 15
    assert sorted(prompts(a.train) + prompts(a.eval_prompts)) == sorted(f"q{i}" for i in range(20))
    # Train rows keep file order; limit keeps the first N of them, the held-out set is unchanged.
    assert prompts(a.train) == sorted(prompts(a.train), key=lambda p: int(p[1:]))
    data.limit = 4
    limited = load_stage_data(data, "grpo", seed=1)
    assert prompts(limited.train) == prompts(a.train)[:4] and prompts(limited.eval_prompts) == prompts(
        a.eval_prompts
    )


def test_split_off_rows_are_counted_once_in_the_drop_report(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path, "d.jsonl", [*({"prompt": f"q{i}", "answer": i} for i in range(9)), {"prompt": "x"}]
    )
    out = load_stage_data(cfg(path, eval_size=3, on_bad_row=OnBadRow.skip), "grpo")
    assert (len(out.train), len(out.eval_prompts)) == (6, 3)
    assert out.drops.summary().startswith(f"dropped 1 of 10 rows from {path}: 1 x missing field 'answer'")


def test_eval_path_and_sft_on_prompt_answer(tmp_path: Path) -> None:
    data = cfg(
        numbered(tmp_path, 3), eval_path=str(write_lines(tmp_path, "e.jsonl", [{"prompt": "e", "answer": 9}]))
    )
    out = load_stage_data(data, "sft")
    assert out.eval_prompts.to_list() == [{"prompt": user("e"), "answer": "9"}]
    assert out.train[0] == {"prompt": user("q0"), "completion": reply("0")}


def test_bad_eval_rows_are_reported_with_their_file(tmp_path: Path) -> None:
    eval_path = write_lines(tmp_path, "e.jsonl", [{"prompt": "e", "answer": 1}, {"prompt": "e"}])
    data = cfg(numbered(tmp_path, 3), eval_path=str(eval_path), on_bad_row=OnBadRow.skip)
    out = load_stage_data(data, "grpo")
    assert len(out.eval_prompts) == 1
    assert out.drops.summary() == (
        f"dropped 1 of 5 rows from {tmp_path / 'd.jsonl'}, {eval_path}: "
        f"1 x missing field 'answer' (first at {eval_path}:2)"
    )


def test_no_eval_for_formats_without_answers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        out = load_stage_data(cfg(DATA / "alpaca.json", eval_size=1), "sft", seed=0)
    assert out.eval_prompts is None and len(out.train) == 2
    assert "format alpaca has no answer column" in caplog.text
    assert load_stage_data(cfg(DATA / "qa_lines.json"), "grpo").eval_prompts is None


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"eval_size": 3}, "field 'eval_size': data.eval_size=3 leaves no training rows (3 usable rows)"),
        ({"eval_split": "test"}, "field 'eval_split': data.eval_split only selects a split of hub data"),
        ({"limit": 0}, "data.limit: field 'limit': limit=0 keeps no rows"),
    ],
)
def test_bad_eval_settings(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        load_stage_data(cfg(numbered(tmp_path, 3), **extra), "grpo")


def test_limit_stops_reading_before_later_bad_rows(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "d.jsonl", [QA, QA, "{broken"])
    data = cfg(path, limit=2)
    out = load_stage_data(data, "grpo")
    assert len(out.train) == 2 and out.drops.total == 0
    data.limit = 3
    with pytest.raises(DataError, match=re.escape(f"{path}:3: malformed JSON")):
        load_stage_data(data, "grpo")
