"""User reward functions the tests reach by dotted path (`_target_: tests.helpers.rewards.NAME`), as a user's own
module would be: async, batched, raising, wrongly typed, and one that reads data columns."""

from __future__ import annotations

import asyncio
from typing import Any

GOOD_XML = "<reasoning>\n3 boxes of 4.\n</reasoning>\n<answer>\n12\n</answer>\n"


def chat(text: str) -> list[dict[str, str]]:
    """A conversational completion: one assistant turn."""
    return [{"role": "assistant", "content": text}]


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


def custom_len(completions, answer, topic, **kwargs):
    """A user's reward: receives the data columns (answer, topic) as keyword arguments."""
    return [float(len(topic[i]) + (c[0]["content"] == answer[i])) for i, c in enumerate(completions)]
