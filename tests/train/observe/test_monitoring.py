"""Completions as a markdown table: table syntax escaped."""

from __future__ import annotations

from pipeline.train.observe.monitoring import completions_markdown


def test_completions_markdown_escapes_table_syntax() -> None:
    table = completions_markdown([{"prompt": "a|b", "completion": "x\ny", "rewards": {"r": 0.5}}])
    assert table.splitlines()[2] == "| a\\|b | x<br>y | 0.5 |"
