"""Limits and faults of a tool call (pipeline/envs/limits.py, isolation.py, output.py) with real functions: a tool
that hangs 60 s is cut at its limit within about a second, one that returns 10 MB comes back truncated with the cut
said, one that raises or returns garbage gives the model an error message; every call is counted per tool."""

from __future__ import annotations

import inspect
import time

import pytest

from pipeline.envs.limits import ToolError, ToolLimits, ToolStats, limit_environment, limit_tool, tools_environment
from tests.helpers.runs import REPO

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"


def hang(seconds: float) -> str:
    """Sleep, then answer.

    Args:
        seconds: How long to sleep.
    """
    time.sleep(seconds)
    return "woke up"


def flood(megabytes: int) -> str:
    """Return a huge text.

    Args:
        megabytes: Size of the text.
    """
    return "spam " * (megabytes * 200_000)


def explode(reason: str) -> str:
    """Always raise.

    Args:
        reason: The error message.
    """
    raise KeyError(reason)


def garbage(kind: str) -> object:
    """Return something that is not text.

    Args:
        kind: Ignored.
    """
    return object()


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: First number.
        b: Second number.
    """
    return a + b


def test_a_hanging_tool_is_cut_at_its_limit_and_counted_as_a_timeout() -> None:
    stats = ToolStats()
    tool = limit_tool(hang, ToolLimits(timeout_s=0.5), stats)
    start = time.monotonic()
    with pytest.raises(ToolError, match="hang timed out after 0.5 s"):
        tool(seconds=60)
    assert time.monotonic() - start < 3
    assert stats.metrics()["tools/hang/timeouts"] == 1.0
    assert stats["hang"].failures == 1 and stats["hang"].calls == 1


def test_a_hanging_tool_in_a_process_is_killed_at_its_limit() -> None:
    stats = ToolStats()
    tool = limit_tool(hang, ToolLimits(timeout_s=1, isolation="process"), stats)
    start = time.monotonic()
    with pytest.raises(ToolError, match="was stopped"):
        tool(seconds=60)
    assert time.monotonic() - start < 15  # a forkserver start included
    assert stats["hang"].timeouts == 1
    assert tool(seconds=0) == "woke up"  # and the next call works


def test_ten_megabytes_are_truncated_to_max_output_tokens_and_the_cut_is_said() -> None:
    # imported here: the process-isolation test's child imports this module, and should start in well under a second
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    stats = ToolStats()
    tool = limit_tool(flood, ToolLimits(max_output_tokens=64), stats, tokenizer)
    start = time.monotonic()
    text = tool(megabytes=10)
    assert time.monotonic() - start < 5  # the 10 MB are never tokenized whole
    body, _, note = text.rpartition("\n")
    assert note == "...[output truncated: 10.0 MB -> 64 tokens]"
    assert len(tokenizer(body, add_special_tokens=False)["input_ids"]) <= 66  # decode/encode may merge at the edge
    assert stats["flood"].truncated == 1 and stats["flood"].failures == 0


def test_without_a_tokenizer_the_cut_is_in_characters() -> None:
    text = limit_tool(flood, ToolLimits(max_output_tokens=100))(megabytes=1)
    assert text.startswith("spam spam") and text.endswith("-> 100 characters]")
    assert len(text) < 200


def test_a_raising_tool_gives_the_model_its_error_and_is_counted() -> None:
    stats = ToolStats()
    with pytest.raises(ToolError, match="explode failed: KeyError: 'boom'"):
        limit_tool(explode, ToolLimits(), stats)(reason="boom")
    returned = limit_tool(explode, ToolLimits(on_error="return"), stats)(reason="boom")
    assert returned.startswith("Error: explode failed: KeyError")
    assert stats.metrics()["tools/explode/failures"] == 2.0


def test_garbage_and_bad_arguments_are_failures_not_crashes() -> None:
    stats = ToolStats()
    with pytest.raises(ToolError, match="returned a object object, not text or JSON"):
        limit_tool(garbage, ToolLimits(), stats)(kind="x")
    with pytest.raises(ToolError, match="bad arguments for add"):
        limit_tool(add, ToolLimits(), stats)(a=1, c=2)
    assert stats["garbage"].failures == 1 and stats["add"].failures == 1


def test_json_values_come_back_as_json_and_the_schema_is_kept() -> None:
    tool = limit_tool(add, ToolLimits())
    assert tool(a=2, b=3) == "5"
    assert tool.__name__ == "add" and inspect.signature(tool) == inspect.signature(add)
    assert tool.__doc__ == add.__doc__


class Counter:
    """A tiny environment: a counter the model can bump."""

    def reset(self, **row: object) -> str:
        self.value = 0
        return "Bump the counter."

    def bump(self, by: int) -> str:
        """Bump the counter.

        Args:
            by: How much to add.
        """
        self.value += by
        return str(self.value)


def test_the_per_episode_cap_counts_calls_between_resets() -> None:
    stats = ToolStats()
    env_cls = limit_environment(Counter, ToolLimits(max_calls_per_episode=2), stats)
    assert env_cls.__name__ == "Counter"
    env = env_cls()
    env.reset()
    assert env.bump(by=1) == "1" and env.bump(by=1) == "2"
    with pytest.raises(ToolError, match="tool-call limit of this episode is reached"):
        env.bump(by=1)
    env.reset()  # a new episode starts from zero calls
    assert env.bump(by=5) == "5"
    assert stats["bump"].calls == 4 and stats["bump"].failures == 1


def test_plain_tools_get_an_episode_of_their_own_when_capped() -> None:
    box = tools_environment([add], ToolLimits(max_calls_per_episode=1))()
    box.reset(prompt="q")
    assert box.add(a=1, b=2) == "3"
    with pytest.raises(ToolError, match="limit of this episode"):
        box.add(a=1, b=2)
    assert list(inspect.signature(box.add).parameters) == ["a", "b"]  # what TRL's schema builder sees
