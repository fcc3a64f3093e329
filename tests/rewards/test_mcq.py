"""MCQ letters: extraction (English and Chinese markers), the letter reward, held-out accuracy on option letters."""

from __future__ import annotations

import pytest

from pipeline.rewards import get_reward
from pipeline.rewards.mcq import extract_letter
from tests.helpers.rewards import chat


@pytest.mark.parametrize(
    ("completion", "letter"),
    [
        ("<reasoning>...</reasoning><answer>B</answer>", "B"),
        ("经过分析，答案：C", "C"),
        ("答案是 D。", "D"),
        ("正確答案：(a)", "A"),
        ("The answer is B.", "B"),
        ("Answer: (c)", "C"),
        ("B", "B"),
        ("A or B, hard to say", None),
        ("Because of this, I think...", None),
    ],
)
def test_mcq_letter_extraction(completion: str, letter: str | None) -> None:
    assert extract_letter(completion) == letter


def test_mcq_letter_reward_compares_with_the_gold_column() -> None:
    scores = get_reward("mcq_letter")([chat("答案：B"), chat("Answer: A"), "junk"], answer=["B", "b", "C"])
    assert scores == [1.0, 0.0, 0.0]


def test_heldout_accuracy_reads_option_letters_for_mcq_golds() -> None:
    from pipeline.rewards.answer import is_correct

    assert is_correct("分析……答案：B", "B") and is_correct("<answer>c</answer>", "C")
    assert not is_correct("答案：A", "B") and is_correct("x = 12", "12")
