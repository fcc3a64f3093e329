"""The code execution reward: the last python block, the fraction of tests passed, and its limits (a loop, an
allocation, a sleep, the network, an early exit)."""

from __future__ import annotations

import time

import pytest

from pipeline.rewards.code import extract_code, passes_tests, run_tests

CODE = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\n"


def test_extract_code_takes_the_last_python_block() -> None:
    assert extract_code("```js\nno\n```\n```python\nx = 1\n```\n```\ny = 2\n```") == "y = 2\n"
    assert extract_code("```python\nx = 1\n```\n```js\nno\n```") == "x = 1\n"
    assert extract_code("x = 3") == "x = 3"


def test_passes_tests_scores_the_fraction_passed_and_skips_rows_without_tests() -> None:
    tests = [["assert add(1, 2) == 3", "assert add(2, 2) == 5"], "assert add(1, 1) == 2", None,
             ["assert add(0, 0) == 0"]]
    completions = [CODE, CODE, CODE, "no code at all"]
    assert passes_tests(completions, tests=tests, timeout_s=5) == [0.5, 1.0, None, 0.0]


@pytest.mark.parametrize(("code", "why"), [
    ("while True:\n    pass", "an endless loop"),
    ("import time\ntime.sleep(60)", "a sleep (no CPU used)"),
    ("x = bytearray(4 * 1024 ** 3)", "a 4 GiB allocation"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))", "a connection"),
    ("import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)", "a download"),
    ("import sys\nsys.exit(0)", "an early exit(0) before the tests run"),
    ("import os\nos._exit(0)", "an early os._exit(0)"),
])
def test_code_that_loops_allocates_or_escapes_scores_zero_quickly(code: str, why: str) -> None:
    start = time.perf_counter()
    assert run_tests(code + "\ndef add(a, b):\n    return a + b", ["assert add(1, 2) == 3"], timeout_s=1.0,
                     memory_mb=256) == 0.0, why
    assert time.perf_counter() - start < 3.0, f"{why} was not cut at its limit"


def test_processes_the_code_starts_do_not_hold_the_score() -> None:
    forked = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\ndef add(a, b):\n    return a + b"
    start = time.perf_counter()
    assert run_tests(forked, ["assert add(1, 2) == 3"], timeout_s=5) == 1.0
    assert time.perf_counter() - start < 3.0


def test_passes_tests_needs_a_tests_column() -> None:
    with pytest.raises(ValueError, match="needs a 'tests' data column"):
        passes_tests([CODE])
