"""Math equivalence: math-verify and the numeric fallback without it."""

from __future__ import annotations

import pytest

from pipeline.rewards import get_reward
from pipeline.rewards.math_equiv import math_equal
from tests.helpers.rewards import chat


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
