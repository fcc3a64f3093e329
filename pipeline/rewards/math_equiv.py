"""Math-equivalence correctness: `math-verify` decides whether two answers are the same mathematical object
(1/2 = 0.5 = \\frac{1}{2}, sets, intervals, expressions); without it, or when it cannot parse an answer, the
numeric comparison of `answer.py` decides.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.rewards.answer import extract_answer, gold_answer, score_answer
from pipeline.rewards.registry import completion_text, register_reward

log = logging.getLogger(__name__)


def math_equal(completion: str, gold: str) -> bool:
    """Whether the completion's final answer equals the gold answer, by math-verify or numerically."""
    predicted = extract_answer(completion)
    if score_answer(predicted, gold) > 0:
        return True
    return _verify(completion, predicted, gold_answer(gold))


def _verify(completion: str, predicted: str | None, gold: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:  # optional: the numeric comparison above already ran
        return False
    try:
        # Gold wrapped in $...$ so plain "1/2" and LaTeX "\frac{1}{2}" both parse; the completion is tried whole
        # (math-verify finds \boxed{} and final expressions itself) and as the extracted answer.
        target = parse(f"${gold}$") or parse(gold)
        candidates = [parse(completion)] + ([parse(f"${predicted}$")] if predicted else [])
        return any(c and verify(target, c) for c in candidates)
    except Exception as e:  # math-verify raises on exotic input and on timeouts outside the main thread
        log.debug("math-verify failed (%s); counting the answer as wrong", e)
        return False


@register_reward("math_equiv")
def math_equiv(
    completions: list[Any], answer: list[str] | None = None, score: float = 1.0, **kwargs: Any
) -> list[float | None]:
    """``score`` when the completion's answer is mathematically equal to the gold ``answer`` column, else 0."""
    if answer is None:
        raise ValueError("math_equiv reward needs an 'answer' dataset column (formats prompt_answer, s1k, gsm8k)")
    return [score if math_equal(completion_text(c), gold) else 0.0 for c, gold in zip(completions, answer, strict=True)]
