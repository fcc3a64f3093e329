"""The seed recipes' rewards, case by case: math equivalence (math-verify and the numeric fallback), strict/soft
XML format, xmlcount, integer answer, MCQ letters (English and Chinese markers), answer markers, dotted-path
custom rewards with data columns as keyword arguments, and the recipe totals (2.8 for seed 001)."""

from __future__ import annotations

import pytest

from pipeline.rewards import UnknownRewardError, build_reward_funcs, get_reward
from pipeline.rewards.math_equiv import math_equal
from pipeline.rewards.mcq import extract_letter
from tests.conftest import compose_config

GOOD_XML = "<reasoning>\n3 boxes of 4.\n</reasoning>\n<answer>\n12\n</answer>\n"


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("completion", "gold", "equal"),
    [
        ("so the answer is \\boxed{\\frac{1}{2}}", "0.5", True),
        ("<answer>72</answer>", "72", True),
        ("\\boxed{\\sqrt{2}}", "\\sqrt{2}", True),
        ("The answer is $\\frac{3}{4}$", "0.75", True),
        ("I get 1,234 apples", "1234", True),
        ("\\boxed{3}", "\\frac{3}{2}", False),
        ("12", "13", False),
        ("no answer at all", "7", False),
    ],
)
def test_math_equiv(completion: str, gold: str, equal: bool) -> None:
    assert math_equal(completion, gold) is equal
    assert get_reward("math_equiv")([chat(completion)], answer=[gold]) == [1.0 if equal else 0.0]


def test_math_equiv_falls_back_to_numbers_without_math_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify now raises ImportError
    assert math_equal("<answer>$1,234</answer>", "1234")
    assert not math_equal("\\boxed{\\frac{1}{2}}", "\\sqrt{2}")


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


def custom_len(completions, answer, topic, **kwargs):
    """A user's reward: receives the data columns (answer, topic) as keyword arguments."""
    return [float(len(topic[i]) + (c[0]["content"] == answer[i])) for i, c in enumerate(completions)]


def test_custom_reward_by_dotted_path_receives_data_columns() -> None:
    funcs, weights = build_reward_funcs({"mine": {"_target_": "tests.test_rewards_seed.custom_len", "weight": 0.5}})
    assert funcs[0].__name__ == "mine" and weights == [0.5]
    assert funcs[0]([chat("4"), chat("5")], answer=["4", "4"], topic=["ab", "abc"], prompts=[]) == [3.0, 3.0]
    with pytest.raises(UnknownRewardError, match="cannot be imported"):
        get_reward("tests.test_rewards_seed.nope")


def test_custom_reward_path_is_checked_at_validation() -> None:
    from pipeline.config.checks import to_run_config

    ok = to_run_config(compose_config(["reward.terms.correctness._target_=tests.test_rewards_seed.custom_len"]))
    assert ok.reward.terms["correctness"]._target_ == "tests.test_rewards_seed.custom_len"
    with pytest.raises(ValueError, match="reward.terms.correctness: unknown reward 'tests.nowhere.fn'"):
        to_run_config(compose_config(["reward.terms.correctness._target_=tests.nowhere.fn"]))


def test_gsm8k_xml_recipe_totals_2_8_and_1_5_for_a_differently_written_number() -> None:
    terms = compose_config(["reward=gsm8k_xml"]).reward.terms
    funcs, weights = build_reward_funcs(terms)

    def total(text: str, gold: str) -> float:
        return sum(w * f([chat(text)], answer=[gold])[0] for f, w in zip(funcs, weights, strict=True))

    assert total(GOOD_XML, "12") == pytest.approx(2.8)
    assert total(GOOD_XML.replace("12", "12.0"), "12") == pytest.approx(2.3)
    assert total("<answer>13</answer>", "12") == pytest.approx(0.4)


def test_gsm8k_smol_recipe_four_rewards() -> None:
    terms = compose_config(["reward=gsm8k_smol"]).reward.terms
    funcs, _ = build_reward_funcs(terms)
    scores = [f([chat(GOOD_XML)], answer=["12"])[0] for f in funcs]
    assert [f.__name__ for f in funcs] == ["xmlcount", "soft_format", "int_answer", "correctness"]
    assert scores == [0.5, 0.5, 0.5, 2.0]


def test_heldout_accuracy_reads_option_letters_for_mcq_golds() -> None:
    from pipeline.rewards.answer import is_correct

    assert is_correct("分析……答案：B", "B") and is_correct("<answer>c</answer>", "C")
    assert not is_correct("答案：A", "B") and is_correct("x = 12", "12")
