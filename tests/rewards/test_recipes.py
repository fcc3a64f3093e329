"""The seed recipes' reward totals: gsm8k's XML recipe (2.8, and 1.5 for a differently written number) and the
smol recipe's four rewards."""

from __future__ import annotations

import pytest

from pipeline.rewards import build_reward_funcs
from tests.helpers.rewards import GOOD_XML, chat
from tests.helpers.runs import compose_config


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
