"""How terms are called: async and batched custom functions, errors that name the term and the row, on_error=zero,
wrong shapes and types."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pipeline.rewards import RewardError, build_reward_funcs, call_terms, score_completions
from tests.helpers.rewards import CALLS


def target(name: str, **term: Any) -> dict[str, Any]:
    return {"_target_": f"tests.helpers.rewards.{name}", **term}


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
