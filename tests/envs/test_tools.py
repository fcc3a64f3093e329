"""The built-in tools (pipeline/envs/calculator.py, python_tool.py, search.py) called as the model would call them:
right answers, and refusals written for the model instead of exceptions."""

from __future__ import annotations

import json
import time

import pytest

from pipeline.envs.calculator import calculate
from pipeline.envs.python_tool import PythonTool
from pipeline.envs.search import SearchIndex, load_corpus


@pytest.mark.parametrize(("expression", "answer"), [
    ("123 * 45", "5535"), ("(12 + 3) * 4 ** 2", "240"), ("7 / 2", "3.5"), ("(-3) ^ 2", "9"), ("-3 ^ 2", "-9"),
    ("6 × 7", "42"),
    ("10 // 3 + 10 % 3", "4"),
])
def test_calculator_answers(expression: str, answer: str) -> None:
    assert calculate(expression) == answer


@pytest.mark.parametrize(("expression", "reason"), [
    ("__import__('os').system('true')", "function call is not allowed"),
    ("x + 1", "the name 'x' is not allowed"),
    ("9 ** 9 ** 9", "exponent"),
    ("1 / 0", "division by zero"),
    ("(" * 400 + "1" + ")" * 400, ""),
    ("", "empty"),
    ("1 +", "not an arithmetic expression"),
])
def test_calculator_refuses_without_evaluating(expression: str, reason: str) -> None:
    start = time.monotonic()
    text = calculate(expression)
    assert text.startswith("Error:") and reason in text
    assert time.monotonic() - start < 1


def test_python_runs_a_snippet_and_echoes_the_last_expression() -> None:
    tool = PythonTool(timeout_s=10)
    assert tool.run_python("import math\nprint(math.factorial(5))\n2 ** 10") == "120\n1024\n"
    trace = tool.run_python("def f():\n    return 1 / 0\nf()")
    assert "ZeroDivisionError" in trace and "<snippet>" in trace and "python_tool" not in trace


def test_python_is_cut_at_its_wall_clock_and_has_no_network() -> None:
    tool = PythonTool(timeout_s=1)
    start = time.monotonic()
    assert "stopped after 1 s" in tool.run_python("import time\ntime.sleep(60)")
    assert time.monotonic() - start < 5
    assert "network access is disabled" in tool.run_python("import socket\nsocket.create_connection(('1.1.1.1', 80))")


def test_python_output_is_bounded() -> None:
    text = PythonTool(timeout_s=10, max_output_chars=100).run_python("print('x' * 10_000_000)")
    assert text.endswith("[output truncated: 10000001 characters -> 100]")


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": "fr", "title": "France", "text": "Paris is the capital of France."},
            {"id": "de", "title": "Germany", "text": "Berlin is the capital of Germany."},
            {"id": "sun", "text": "The sun is a star at the centre of the solar system."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_search_ranks_the_matching_document_first(corpus) -> None:
    index = SearchIndex(corpus, k=2)
    found = index.search("capital of Germany")
    assert found.startswith("[de] Germany\nBerlin")
    assert "No document matches" in index.search("quantum chromodynamics")
    assert index.search("  ").startswith("Error:")


def test_a_bad_corpus_line_is_refused_with_its_number(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1, "text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 needs an \"id\""):
        load_corpus(path)
