"""XML format reward: partial credit for each reasoning/answer tag the completion contains."""

from __future__ import annotations

from typing import Any

from pipeline.rewards.registry import completion_text, register_reward

TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")


@register_reward("xml_format")
def xml_format(completions: list[Any], per_tag: float = 0.2, **kwargs: Any) -> list[float | None]:
    """``per_tag`` for each of the four tags present; repeats count once, so the maximum is 4 * per_tag."""
    return [_tag_score(completion_text(c), per_tag) for c in completions]


def _tag_score(text: str, per_tag: float) -> float:
    return per_tag * sum(tag in text for tag in TAGS)
