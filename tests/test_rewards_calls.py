"""How terms are called: async and batched custom functions, errors that name the term and the row, on_error=zero,
and the code execution reward's limits (a loop, an allocation, a sleep, the network, an early exit)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pipeline.rewards import RewardError, build_reward_funcs, call_terms, score_completions
from pipeline.rewards.code import extract_code, passes_tests, run_tests

CALLS: list[int] = []


async def slow_len(completions: list[Any], delay: float = 0.3, **kwargs: Any) -> list[float]:
    """An async user reward (e.g. a remote call): sleeps, then scores the completion length."""
    await asyncio.sleep(delay)
    return [float(len(c[0]["content"])) for c in completions]


def batched_len(completions: list[Any], **kwargs: Any) -> list[float]:
    """A batched user reward: one call per batch, recorded."""
    CALLS.append(len(completions))
    return [float(len(c[0]["content"])) for c in completions]


def breaks_on_x(completions: list[Any], **kwargs: Any) -> list[float]:
    return [1.0 / (c[0]["content"] != "x") for c in completions]


async def async_breaks_on_x(completions: list[Any], **kwargs: Any) -> list[float]:
    return breaks_on_x(completions)


def only_in_batches(completions: list[Any], **kwargs: Any) -> list[float]:
    if len(completions) > 1:
        raise MemoryError("batch too large")
    return [1.0]


def returns_text(completions: list[Any], **kwargs: Any) -> list[Any]:
    return ["high" for _ in completions]


def target(name: str, **term: Any) -> dict[str, Any]:
    return {"_target_": f"tests.test_rewards_calls.{name}", **term}


def test_async_terms_are_awaited_concurrently_and_batched_ones_called_once() -> None:
    funcs, _ = build_reward_funcs({"a": target("slow_len"), "b": target("slow_len"), "c": target("batched_len")})
    assert [asyncio.iscoroutinefunction(f) for f in funcs] == [True, True, False]  # TRL awaits the first two
    CALLS.clear()
    start = time.perf_counter()
    per_term, totals = score_completions(funcs, [1.0, 0.5, 1.0], ["p"] * 3, ["ab", "abc", ""], {})
    assert time.perf_counter() - start < 0.55, "the two 0.3 s async terms ran one after the other"
    assert per_term == {"a": [2.0, 3.0, 0.0], "b": [2.0, 3.0, 0.0], "c": [2.0, 3.0, 0.0]}
    assert totals == [5.0, 7.5, 0.0] and CALLS == [3]


def test_async_terms_also_run_inside_a_running_event_loop() -> None:
    funcs, _ = build_reward_funcs({"a": target("slow_len", kwargs={"delay": 0.0})})

    async def inside() -> dict[str, list[float | None]]:
        return call_terms(funcs, completions=[[{"role": "assistant", "content": "xyz"}]])

    assert asyncio.run(inside()) == {"a": [3.0]}


@pytest.mark.parametrize("name", ["breaks_on_x", "async_breaks_on_x"])
def test_a_raising_reward_names_the_term_the_row_and_the_exception(name: str) -> None:
    funcs, _ = build_reward_funcs({"mine": target(name)})
    with pytest.raises(RewardError, match=r"reward term 'mine' failed on row 1 of 3 \(prompt 'q1', completion 'x'\): "
                                          r"ZeroDivisionError: float division by zero\. Fix the reward, or set "
                                          r"reward.terms.mine.on_error=zero"):
        score_completions(funcs, [1.0], ["q0", "q1", "q2"], ["a", "x", "b"], {})


@pytest.mark.parametrize("name", ["breaks_on_x", "async_breaks_on_x"])
def test_on_error_zero_scores_only_the_failing_rows_zero_and_counts_them(name: str, caplog) -> None:
    funcs, _ = build_reward_funcs({"mine": target(name, on_error="zero")})
    logged: list[tuple[str, float]] = []
    completions = [[{"role": "assistant", "content": t}] for t in ("a", "x", "x", "b")]
    call = {"completions": completions, "prompts": ["q"] * 4, "log_metric": lambda k, v: logged.append((k, v))}
    result = funcs[0](**call)
    result = asyncio.run(result) if asyncio.iscoroutine(result) else result
    assert result == [1.0, 0.0, 0.0, 1.0]
    assert funcs[0].term.failures == 2 and logged == [("rewards/mine/failures", 2.0)]
    assert "reward term 'mine': 2 of 4 rows failed and score 0" in caplog.text


def test_a_failure_only_in_batches_is_named_as_such() -> None:
    funcs, _ = build_reward_funcs({"mine": target("only_in_batches")})
    with pytest.raises(RewardError, match=r"failed on the batch of 2 completions \(each row alone scores\): "
                                          r"MemoryError: batch too large"):
        score_completions(funcs, [1.0], ["q", "q"], ["a", "b"], {})


def test_wrong_shapes_and_types_are_named() -> None:
    funcs, _ = build_reward_funcs({"mine": target("returns_text")})
    with pytest.raises(RewardError, match=r"'mine' failed on row 0 .*TypeError: score 'high' is not a number"):
        score_completions(funcs, [1.0], ["q"], ["a"], {})
    funcs, _ = build_reward_funcs({"length": {"kwargs": {"target": 2}}})
    assert funcs[0]([[{"role": "assistant", "content": "ab"}]]) == [1.0]  # completions may come positionally


# ---- code execution ----------------------------------------------------------------------------------------------

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
