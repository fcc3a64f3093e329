"""Answer correctness reward: extract the final answer from a completion and compare it with the gold.

Also the source of truth for held-out accuracy (``is_correct``), so training reward and evaluation
agree on what counts as a right answer.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pipeline.rewards.mcq import extract_letter
from pipeline.rewards.registry import completion_text, register_reward

# A comma is a thousands separator only when followed by exactly three digits ("1,234"); otherwise
# it separates numbers ("1,2,3"). A sign counts only when it does not follow a word character, so
# "5-7" is two numbers and "x = -7" is minus seven.
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(rf"(?:(?<![\w.])[-+])?(?:{_UNSIGNED})(?:/(?:{_UNSIGNED}))?")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FRAC_RE = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_BOXED = "\\boxed{"
_GSM8K_MARK = "####"
# Decoration around a bare number: markdown bold, currency, "=", percent, a sentence's full stop.
_EDGE_CHARS = " \t\r\n*_$=%"


def extract_answer(text: str) -> str | None:
    """The final answer in ``text``: last <answer> tag, else last \\boxed{}, else after "####",
    else the last number; None when there is none."""
    for extract in (_last_answer_tag, _last_boxed, _after_gsm8k_mark, _last_number):
        found = extract(text)
        if found:
            return found
    return None


def parse_number(s: str) -> float | None:
    """The number ``s`` spells ("$1,234", "**42**", "3/4", "50%", "42.", "=42"), or None if ``s`` is
    anything more than a decorated number."""
    text = _normalize_latex(s).replace("\u2212", "-").replace("\\$", "").replace("$", "")
    text = text.strip(_EDGE_CHARS).rstrip(_EDGE_CHARS + ".")
    if not _NUMBER_RE.fullmatch(text):
        return None
    return _to_float(text)


def gold_answer(gold: str) -> str:
    """The gold answer proper: GSM8K-style golds keep only the text after the last "####"."""
    if _GSM8K_MARK in gold:
        gold = gold.rsplit(_GSM8K_MARK, 1)[1]
    return gold.strip()


def score_answer(
    predicted: str | None, gold: str, exact_score: float = 1.0, equal_score: float = 1.0
) -> float:
    """``exact_score`` for an identical answer, ``equal_score`` for a numerically equal one, else 0."""
    if predicted is None:
        return 0.0
    predicted, gold = predicted.strip(), gold_answer(gold)
    if predicted == gold:
        return exact_score
    gold_value = parse_number(gold)
    if gold_value is None:
        return exact_score if _normalize_text(predicted) == _normalize_text(gold) else 0.0
    predicted_value = _predicted_number(predicted)
    if predicted_value is not None and _numbers_equal(predicted_value, gold_value):
        return equal_score
    return 0.0


def is_correct(completion_text: str, gold: str) -> bool:
    """Whether the completion's final answer matches the gold (exactly or numerically); a gold option letter
    (A-D, the mcq format) is compared with the letter the completion picks ("答案：B", "Answer: B", <answer>B)."""
    if gold.strip().upper() in ("A", "B", "C", "D"):
        return extract_letter(completion_text) == gold.strip().upper()
    return score_answer(extract_answer(completion_text), gold) > 0


@register_reward("correctness")
def correctness(
    completions: list[Any],
    answer: list[str] | None = None,
    exact_score: float = 1.0,
    equal_score: float = 1.0,
    **kwargs: Any,
) -> list[float | None]:
    """Per completion: ``exact_score`` if its answer equals the gold string, ``equal_score`` if it is
    numerically equal, else 0.0. The gold comes from the dataset column ``answer``."""
    if answer is None:
        raise ValueError("correctness reward needs an 'answer' dataset column (data format prompt_answer)")
    return [
        score_answer(extract_answer(completion_text(c)), gold, exact_score, equal_score)
        for c, gold in zip(completions, answer, strict=True)
    ]


def _last_answer_tag(text: str) -> str | None:
    matches = _ANSWER_TAG_RE.findall(text)
    return matches[-1].strip() if matches else None


def _last_boxed(text: str) -> str | None:
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    # Braces nest (\boxed{\frac{3}{4}}), so a regex cannot find the closing one.
    depth = 0
    body_start = start + len(_BOXED)
    for i in range(body_start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[body_start:i].strip()
            depth -= 1
    return None


def _after_gsm8k_mark(text: str) -> str | None:
    if _GSM8K_MARK not in text:
        return None
    # Only the first line: models tend to keep talking after the final answer.
    lines = text.rsplit(_GSM8K_MARK, 1)[1].strip().splitlines()
    return lines[0].strip() if lines else None


def _last_number(text: str) -> str | None:
    matches = _NUMBER_RE.findall(_normalize_latex(text).replace("\u2212", "-"))
    return matches[-1] if matches else None


def _predicted_number(predicted: str) -> float | None:
    # A tag or box may hold a sentence ("x = -7"); fall back to its last number.
    value = parse_number(predicted)
    if value is not None:
        return value
    last = _last_number(predicted)
    return _to_float(last) if last else None


def _to_float(number: str) -> float | None:
    numerator, _, denominator = number.replace(",", "").partition("/")
    if not denominator:
        return float(numerator)
    if float(denominator) == 0:
        return None
    return float(numerator) / float(denominator)


def _numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=1e-6 * max(1.0, abs(b)))


def _normalize_latex(text: str) -> str:
    return _FRAC_RE.sub(r"\1/\2", text.replace("{,}", ",").replace("\\%", "%").replace("\\!", ""))


def _normalize_text(text: str) -> str:
    return " ".join(text.strip(_EDGE_CHARS).rstrip(_EDGE_CHARS + ".").casefold().split())


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in ``text`` (braces may nest), or None."""
    return _last_boxed(text)
