"""Reward functions for GRPO: importing this package registers every built-in reward and term kind.

Kept free of torch/transformers/trl imports: config validation imports it to check reward names before any
heavy library is loaded. Add a reward: a module here with `@register_reward("name")`, imported below; a term
kind built from its own fields (judge, reward_model): `register_kind`.
"""

from pipeline.rewards import answer, code, format, judge, length, math_equiv, mcq, model, xml  # noqa: F401  (they register)
from pipeline.rewards.calls import (
    RewardError,
    RewardSetupError,
    RowFailure,
    build_reward_funcs,
    call_terms,
    score_completions,
)
from pipeline.rewards.model import place_reward_models
from pipeline.rewards.registry import (
    KINDS,
    REWARDS,
    RewardFunc,
    UnknownRewardError,
    completion_text,
    get_reward,
    register_kind,
    register_reward,
    reward_names,
    term_function,
    term_problems,
)

__all__ = [
    "KINDS",
    "REWARDS",
    "RewardError",
    "RewardFunc",
    "RewardSetupError",
    "RowFailure",
    "UnknownRewardError",
    "build_reward_funcs",
    "call_terms",
    "completion_text",
    "get_reward",
    "place_reward_models",
    "register_kind",
    "register_reward",
    "reward_names",
    "score_completions",
    "term_function",
    "term_problems",
]
