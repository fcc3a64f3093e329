"""Multiple-choice rewards: the answer letter (A-D) and the presence of an answer marker, in English and
Chinese ("Answer: B", "答案：B", "<answer>B</answer>", a bare "B").
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.rewards.registry import completion_text, register_reward

# Markers that introduce the final choice, strongest first; full-width colons are common in Chinese text.
_MARKED = [
    re.compile(r"<answer>\s*\(?([A-D])\b", re.IGNORECASE),
    re.compile(
        r"(?:答案|答|正確答案|正确答案|選擇|选择)\s*(?:是|為|为)?\s*[:：]?\s*\(?([A-D])(?![A-Za-z])", re.IGNORECASE
    ),
    re.compile(r"\banswer\s*(?:is)?\s*[:：]?\s*\(?([A-D])\b", re.IGNORECASE),
]
_BARE = re.compile(r"^\(?([A-D])[).。.]?$")
DEFAULT_MARKERS = ("答案：", "答案:", "Answer:", "answer:", "<answer>")


def extract_letter(text: str) -> str | None:
    """The chosen option letter: the last marked one, else a completion that is only a letter; None otherwise."""
    for pattern in _MARKED:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    bare = _BARE.match(text.strip())
    return bare.group(1).upper() if bare else None


@register_reward("mcq_letter")
def mcq_letter(
    completions: list[Any], answer: list[str] | None = None, score: float = 1.0, **kwargs: Any
) -> list[float | None]:
    """``score`` when the extracted letter equals the gold letter in the ``answer`` column (format mcq)."""
    if answer is None:
        raise ValueError("mcq_letter reward needs an 'answer' column with the gold letter (data format mcq)")
    return [
        score if extract_letter(completion_text(c)) == str(gold).strip().upper() else 0.0
        for c, gold in zip(completions, answer, strict=True)
    ]


@register_reward("answer_marker")
def answer_marker(
    completions: list[Any], score: float = 0.3, markers: list[str] | None = None, **kwargs: Any
) -> list[float | None]:
    """``score`` when the completion states its answer with a marker ("答案：", "Answer:", <answer>...)."""
    wanted = tuple(markers) if markers else DEFAULT_MARKERS
    return [score if any(m in completion_text(c) for m in wanted) else 0.0 for c in completions]
