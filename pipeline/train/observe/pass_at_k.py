"""pass@k and maj@k over k sampled completions per held-out problem (the eval-during-training metrics).

pass@k: share of problems where at least one of the k completions is correct (with exactly k samples drawn, the
unbiased estimator 1 - C(n-c, k)/C(n, k) of Chen et al. 2021 reduces to this).
maj@k: share of problems where the most frequent final answer among the k completions is correct (ties go to
the answer seen first; completions without an answer do not vote).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pipeline.rewards.answer import extract_answer, is_correct, parse_number


def pass_at_k(sampled: list[list[str]], golds: list[str], score: Callable[[str, str], bool] = is_correct) -> float:
    if not sampled:
        return 0.0
    return sum(any(score(text, gold) for text in texts) for texts, gold in zip(sampled, golds, strict=True)) / len(
        sampled)


def maj_at_k(sampled: list[list[str]], golds: list[str], score: Callable[[str, str], bool] = is_correct) -> float:
    if not sampled:
        return 0.0
    return sum(_majority_correct(texts, gold, score) for texts, gold in zip(sampled, golds, strict=True)) / len(
        sampled)


def _majority_correct(texts: list[str], gold: str, score: Callable[[str, str], bool]) -> bool:
    votes: Counter = Counter()
    first: dict = {}
    for text in texts:
        key = _vote(text)
        if key is None:
            continue
        votes[key] += 1
        first.setdefault(key, text)
    if not votes:
        return False
    top = max(votes.values())
    # Counter keeps insertion order: the first answer that reaches the top count wins a tie.
    winner = next(key for key, count in votes.items() if count == top)
    return bool(score(first[winner], gold))


def _vote(text: str) -> object | None:
    # "42", "42.0" and "$42" are one vote; non-numeric answers vote by their stripped text.
    answer = extract_answer(text)
    if answer is None:
        return None
    number = parse_number(answer)
    return number if number is not None else answer.strip()
