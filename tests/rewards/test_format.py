"""Format and length rewards: XML tags, xmlcount, length targets, completion text."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.rewards import (
    completion_text,
    get_reward,
)
from pipeline.rewards.format import xml_format
from pipeline.rewards.length import length
from tests.helpers.rewards import GOOD_XML, chat


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


@pytest.mark.parametrize(
    ("name", "completion", "score"),
    [
        ("strict_format", GOOD_XML, 0.5),
        ("strict_format", "Sure! " + GOOD_XML, 0.0),
        ("strict_format", "<reasoning>x</reasoning><answer>1</answer>", 0.0),
        ("soft_format", "Sure! <reasoning>x</reasoning> <answer>1</answer> bye", 0.5),
        ("soft_format", "<answer>1</answer><reasoning>x</reasoning>", 0.0),
        ("xmlcount", GOOD_XML, 0.5),
        ("xmlcount", "<reasoning>x</reasoning><reasoning>y</reasoning><answer>1</answer>", 0.25),
        ("xmlcount", "no tags", 0.0),
        ("int_answer", GOOD_XML, 0.5),
        ("int_answer", "<answer>12.5</answer>", 0.0),
        ("int_answer", "42", 0.5),
        ("answer_marker", "推理……答案：B", 0.3),
        ("answer_marker", "Answer: C", 0.3),
        ("answer_marker", "I pick C", 0.0),
    ],
)
def test_format_rewards(name: str, completion: str, score: float) -> None:
    assert get_reward(name)([chat(completion)]) == [pytest.approx(score)]


def test_xmlcount_trailing_penalty() -> None:
    assert get_reward("xmlcount")([GOOD_XML + "extra"], trailing_penalty=0.001) == [pytest.approx(0.495)]
