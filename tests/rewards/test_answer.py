"""Answer rewards: answer extraction, number parsing, correctness (exact and equal scores, conversational
completions, TRL's keyword arguments, a missing answer column) and is_correct."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.rewards.answer import correctness, extract_answer, is_correct, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is $1,234.", "1,234"),
        ("1234.00", "1234.00"),
        ("So it is **42**", "42"),
        ("x = -7", "-7"),
        ("1,2,3", "3"),
        ("1,2345", "2345"),
        ("from 5-7 days", "7"),
        ("no number here", None),
        ("<answer>17</answer> I checked 3 times", "17"),
        ("<answer>1</answer> then <answer> 2 </answer>", "2"),
        ("<answer></answer> 9", "9"),
        ("so \\boxed{\\frac{3}{4}} and 5 more", "\\frac{3}{4}"),
        ("\\boxed{12} <answer>7</answer>", "7"),
        ("work 3 + 4\n#### 7\nhope this helps 99", "7"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("1,234", 1234.0),
        ("$5", 5.0),
        ("\\$5", 5.0),
        ("5.00", 5.0),
        ("-3", -3.0),
        ("+3", 3.0),
        ("50%", 50.0),
        ("3/4", 0.75),
        ("\\frac{3}{4}", 0.75),
        ("42.", 42.0),
        ("**42**", 42.0),
        ("=42", 42.0),
        (".5", 0.5),
        ("12,345,678.9", 12345678.9),
        ("1/0", None),
        ("1,2,3", None),
        ("x = -7", None),
        ("Paris", None),
        ("", None),
    ],
)
def test_parse_number(s: str, expected: float | None) -> None:
    assert parse_number(s) == expected


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("The answer is $1,234.", "1234", 1.5),
        ("The answer is 1,234", "1,234", 2.0),
        ("1234.00", "1234", 1.5),
        ("**42**", "42", 2.0),
        ("x = -7", "-7", 2.0),
        ("x = -7", "7", 0.0),
        ("3/4", "0.75", 1.5),
        ("50%", "50", 2.0),
        ("<answer>50%</answer>", "50", 1.5),
        ("1,2,3", "3", 2.0),
        ("1,2,3", "123", 0.0),
        ("I do not know", "5", 0.0),
        ("", "5", 0.0),
        ("so the total is 1234", "Natalia sold 48 + 1186 = 1234 clips.\n#### 1,234", 1.5),
        ("#### 1,234", "reasoning...\n#### 1,234", 2.0),
        ("<answer>17</answer> I double checked this 3 times", "17", 2.0),
        ("<answer>x = -7</answer>", "-7", 1.5),
        ("<answer>18</answer> wait, 17", "17", 0.0),
        ("\\boxed{\\frac{3}{4}}", "0.75", 1.5),
        ("\\boxed{0.75}", "3/4", 1.5),
        ("41.9999999", "42", 1.5),
        ("41.99", "42", 0.0),
        ("<answer> paris. </answer>", "Paris", 2.0),
        ("<answer>New   York</answer>", "new york", 2.0),
        ("<answer>London</answer>", "Paris", 0.0),
    ],
)
def test_correctness_with_exact_and_equal_scores(completion: str, gold: str, expected: float) -> None:
    assert correctness([completion], answer=[gold], exact_score=2.0, equal_score=1.5) == [expected]


def test_correctness_defaults_score_one_for_exact_and_equal() -> None:
    assert correctness(["42", "42.0", "41"], answer=["42", "42", "42"]) == [1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "completion",
    [
        [{"role": "assistant", "content": "<answer>42</answer>"}],
        [{"role": "user", "content": "7"}, {"role": "assistant", "content": "It is 42."}],
        [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{42}"}]}],
    ],
)
def test_correctness_conversational_completions(completion: list[dict[str, Any]]) -> None:
    assert correctness([completion], answer=["42"], exact_score=2.0, equal_score=1.5) == [2.0]


def test_correctness_accepts_and_ignores_trl_kwargs() -> None:
    scores = correctness(
        prompts=["q1", "q2"],
        completions=["5", "6"],
        completion_ids=[[1], [2]],
        trainer_state=object(),
        answer=["5", "5"],
        question=["q1", "q2"],
    )
    assert scores == [1.0, 0.0]


def test_correctness_without_answer_column_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match="'answer' dataset column"):
        correctness(["5"])


@pytest.mark.parametrize(
    ("text", "gold", "expected"),
    [
        ("The answer is $1,234.", "... #### 1,234", True),
        ("<answer>0.75</answer>", "3/4", True),
        ("<answer>0.7</answer>", "3/4", False),
        ("nothing", "1", False),
    ],
)
def test_is_correct(text: str, gold: str, expected: bool) -> None:
    assert is_correct(text, gold) is expected
