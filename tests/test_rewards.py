"""Tests for pipeline.rewards: answer extraction, numeric scoring, format/length rewards, registry."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pipeline.rewards as rewards
from pipeline.rewards import (
    REWARDS,
    UnknownRewardError,
    build_reward_funcs,
    completion_text,
    get_reward,
    register_reward,
    reward_names,
)
from pipeline.rewards.answer import correctness, extract_answer, is_correct, parse_number
from pipeline.rewards.format import xml_format
from pipeline.rewards.length import length

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every registered reward (issue 4 added the seed recipes' rewards).
ALL_REWARDS = [
    "answer_marker", "correctness", "int_answer", "judge", "length", "math_equiv", "mcq_letter", "passes_tests",
    "reward_model", "soft_format", "strict_format", "xml_format", "xmlcount",
]



@dataclass
class Term:
    """Stand-in with RewardTermConfig's shape, so these tests do not depend on pipeline.config.schema."""

    function: str | None = None
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- extraction and parsing


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


# ---------------------------------------------------------------- correctness


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


# ---------------------------------------------------------------- format and length


@pytest.mark.parametrize(
    ("completion", "per_tag", "expected"),
    [
        ("plain text", 0.2, 0.0),
        ("<answer>4</answer>", 0.2, 0.4),
        ("<reasoning>r</reasoning>", 0.2, 0.4),
        ("<reasoning>r</reasoning>\n<answer>4</answer>", 0.2, 0.8),
        ("<reasoning>r</reasoning><reasoning></reasoning><answer>1</answer><answer>", 0.2, 0.8),
        ("<answer><answer><answer>", 0.2, 0.2),
        ("<reasoning>r</reasoning>\n<answer>4</answer>", 0.5, 2.0),
        ([{"role": "assistant", "content": "<reasoning>r</reasoning>"}], 0.2, 0.4),
    ],
)
def test_xml_format(completion: Any, per_tag: float, expected: float) -> None:
    assert xml_format([completion], per_tag=per_tag, answer=["ignored"]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    ("n_chars", "target", "expected"),
    [
        (0, 32, 1.0),
        (10, 32, 1.0),
        (32, 32, 1.0),
        (40, 32, 0.75),
        (48, 32, 0.5),
        (64, 32, 0.0),
        (500, 32, 0.0),
        (15, 10, 0.5),
    ],
)
def test_length(n_chars: int, target: int, expected: float) -> None:
    assert length(["x" * n_chars], target=target) == [pytest.approx(expected)]


def test_length_uses_default_target_and_conversation_content() -> None:
    assert length([[{"role": "assistant", "content": "x" * 40}]]) == [pytest.approx(0.75)]


def test_length_rejects_non_positive_target() -> None:
    with pytest.raises(ValueError, match="target must be > 0"):
        length(["x"], target=0)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("plain", "plain"),
        ([{"role": "assistant", "content": "last"}], "last"),
        ([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}], "b"),
        ([{"role": "assistant", "content": None}], ""),
        ([], ""),
    ],
)
def test_completion_text(completion: Any, expected: str) -> None:
    assert completion_text(completion) == expected


# ---------------------------------------------------------------- registry


def test_builtin_rewards_are_registered() -> None:
    assert reward_names() == ALL_REWARDS
    assert get_reward("correctness") is correctness
    assert get_reward("xml_format") is xml_format
    assert get_reward("length") is length


def test_unknown_reward_error_lists_known_names_and_the_fix() -> None:
    with pytest.raises(UnknownRewardError) as info:
        get_reward("corectness")
    message = str(info.value)
    assert message == (
        f"unknown reward 'corectness'; known rewards: {', '.join(ALL_REWARDS)}. "
        "Set reward.terms.<term>.function to one of them."
    )
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ValueError)


@pytest.fixture
def scratch_name() -> Any:
    name = "test_scratch_reward"
    yield name
    REWARDS.pop(name, None)


def test_register_reward_returns_function_and_rejects_duplicates(scratch_name: str) -> None:
    def fn(completions: list[Any], **kwargs: Any) -> list[float | None]:
        return [0.0 for _ in completions]

    assert register_reward(scratch_name)(fn) is fn
    assert get_reward(scratch_name) is fn
    with pytest.raises(ValueError, match="already registered"):
        register_reward(scratch_name)(fn)
    with pytest.raises(ValueError, match="already registered"):
        register_reward("correctness")(fn)
    assert get_reward("correctness") is correctness


def test_build_reward_funcs_names_weights_and_bound_kwargs() -> None:
    terms = {
        "accuracy": Term(function="correctness", weight=2, kwargs={"exact_score": 2.0, "equal_score": 1.5}),
        "xml_format": Term(weight=0.5, kwargs={"per_tag": 0.25}),
        "brevity": Term(function="length", weight=0.1, kwargs={"target": 4}),
    }
    funcs, weights = build_reward_funcs(terms)

    assert [f.__name__ for f in funcs] == ["accuracy", "xml_format", "brevity"]
    assert weights == [2.0, 0.5, 0.1]
    assert all(isinstance(w, float) for w in weights)

    completions = ["<answer>42</answer>", "42.0", "<answer>7</answer>"]
    call = {"prompts": ["p"] * 3, "completion_ids": [[0]] * 3, "trainer_state": None, "answer": ["42"] * 3}
    accuracy, fmt, brevity = funcs
    assert accuracy(completions=completions, **call) == [2.0, 1.5, 0.0]
    assert fmt(completions=completions, **call) == [0.5, 0.0, 0.5]
    assert brevity(completions=["abcd", "abcdef"], **call) == [1.0, 0.5]


def test_build_reward_funcs_accepts_mappings_and_bound_kwargs_win_over_columns() -> None:
    funcs, weights = build_reward_funcs({"length": {"kwargs": {"target": 2}}})
    assert weights == [1.0]
    assert funcs[0].__name__ == "length"
    assert funcs[0](completions=["abcd"], target=[100]) == [0.0]


def test_build_reward_funcs_unknown_function_names_the_known_ones() -> None:
    with pytest.raises(UnknownRewardError, match="known rewards: answer_marker, correctness, int_answer, judge"):
        build_reward_funcs({"acc": Term(function="corectness")})


def test_build_reward_funcs_rejects_misspelled_kwargs() -> None:
    with pytest.raises(ValueError, match=r"reward.terms.fmt.kwargs: .*per_tg.*accepts: per_tag"):
        build_reward_funcs({"fmt": Term(function="xml_format", kwargs={"per_tg": 0.3})})


def test_build_reward_funcs_empty_terms() -> None:
    assert build_reward_funcs({}) == ([], [])


def test_import_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, pipeline.rewards\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'trl') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        f"assert pipeline.rewards.reward_names() == {ALL_REWARDS!r}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_public_api_is_exported() -> None:
    assert set(rewards.__all__) >= {"REWARDS", "build_reward_funcs", "get_reward", "register_reward"}
