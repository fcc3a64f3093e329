"""XML reasoning/answer format rewards from the GSM8K GRPO recipes: strict and soft layout, tag count, integer
answer. The layout is <reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.rewards.registry import completion_text, register_reward

TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
_STRICT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n?$", re.DOTALL)
_SOFT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)


def xml_answer(text: str) -> str:
    """Text inside the last <answer>...</answer> (the whole text, stripped, when there is no tag)."""
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


@register_reward("strict_format")
def strict_format(completions: list[Any], score: float = 0.5, **kwargs: Any) -> list[float | None]:
    """``score`` when the whole completion is exactly the XML layout, line breaks included."""
    return [score if _STRICT.match(completion_text(c).strip() + "\n") else 0.0 for c in completions]


@register_reward("soft_format")
def soft_format(completions: list[Any], score: float = 0.5, **kwargs: Any) -> list[float | None]:
    """``score`` when a <reasoning> block is followed by an <answer> block anywhere in the completion."""
    return [score if _SOFT.search(completion_text(c)) else 0.0 for c in completions]


@register_reward("xmlcount")
def xmlcount(
    completions: list[Any], per_tag: float = 0.125, trailing_penalty: float = 0.0, **kwargs: Any
) -> list[float | None]:
    """``per_tag`` for each of the four tags that appears exactly once (a repeated tag earns nothing), minus
    ``trailing_penalty`` per character after </answer> (0 in the seed recipe)."""
    return [_count(completion_text(c), per_tag, trailing_penalty) for c in completions]


def _count(text: str, per_tag: float, trailing_penalty: float) -> float:
    score = per_tag * sum(text.count(tag) == 1 for tag in TAGS)
    if trailing_penalty and "</answer>" in text:
        score -= trailing_penalty * len(text.split("</answer>")[-1].strip())
    return score


@register_reward("int_answer")
def int_answer(completions: list[Any], score: float = 0.5, **kwargs: Any) -> list[float | None]:
    """``score`` when the <answer> content is a non-negative integer (digits only)."""
    return [score if xml_answer(completion_text(c)).isdigit() else 0.0 for c in completions]
