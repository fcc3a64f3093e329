"""Length shaping reward: full score up to a character budget, decaying linearly to 0 at twice it."""

from __future__ import annotations

from typing import Any

from pipeline.rewards.registry import completion_text, register_reward


@register_reward("length")
def length(completions: list[Any], target: int = 32, **kwargs: Any) -> list[float | None]:
    """1.0 for completions of at most ``target`` characters, then 1 - overshoot / target, floored at 0."""
    if target <= 0:
        raise ValueError(f"length reward: target must be > 0, got {target}")
    return [_length_score(len(completion_text(c)), target) for c in completions]


def _length_score(n_chars: int, target: int) -> float:
    if n_chars <= target:
        return 1.0
    return max(0.0, 1.0 - (n_chars - target) / target)
