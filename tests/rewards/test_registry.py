"""The reward registry: built-ins registered, unknown names listed with the fix, register_reward, build_reward_funcs,
custom rewards by dotted path, a light import."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

import pipeline.rewards as rewards
from pipeline.rewards import (
    REWARDS,
    UnknownRewardError,
    build_reward_funcs,
    get_reward,
    register_reward,
    reward_names,
)
from pipeline.rewards.answer import correctness
from pipeline.rewards.format import xml_format
from pipeline.rewards.length import length
from tests.helpers.rewards import chat
from tests.helpers.runs import REPO, compose_config

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
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_public_api_is_exported() -> None:
    assert set(rewards.__all__) >= {"REWARDS", "build_reward_funcs", "get_reward", "register_reward"}


def test_custom_reward_by_dotted_path_receives_data_columns() -> None:
    funcs, weights = build_reward_funcs({"mine": {"_target_": "tests.helpers.rewards.custom_len", "weight": 0.5}})
    assert funcs[0].__name__ == "mine" and weights == [0.5]
    assert funcs[0]([chat("4"), chat("5")], answer=["4", "4"], topic=["ab", "abc"], prompts=[]) == [3.0, 3.0]
    with pytest.raises(UnknownRewardError, match="cannot be imported"):
        get_reward("tests.helpers.rewards.nope")


def test_custom_reward_path_is_checked_at_validation() -> None:
    from pipeline.config.checks import to_run_config

    ok = to_run_config(compose_config(["reward.terms.correctness._target_=tests.helpers.rewards.custom_len"]))
    assert ok.reward.terms["correctness"]._target_ == "tests.helpers.rewards.custom_len"
    with pytest.raises(ValueError, match="reward.terms.correctness: unknown reward 'tests.nowhere.fn'"):
        to_run_config(compose_config(["reward.terms.correctness._target_=tests.nowhere.fn"]))
