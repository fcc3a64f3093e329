"""Reward functions for GRPO: importing this package registers every built-in reward.

Kept free of torch/transformers/trl imports: config validation imports it to check reward names before any
heavy library is loaded. Add a reward: a module here with `@register_reward("name")`, imported below.
"""

from pipeline.rewards import answer, format, length, math_equiv, mcq, xml  # noqa: F401  (they register)
from pipeline.rewards.registry import (
    REWARDS,
    RewardFunc,
    UnknownRewardError,
    build_reward_funcs,
    completion_text,
    get_reward,
    register_reward,
    reward_names,
    score_completions,
)

__all__ = [
    "REWARDS",
    "RewardFunc",
    "UnknownRewardError",
    "build_reward_funcs",
    "completion_text",
    "get_reward",
    "register_reward",
    "reward_names",
    "score_completions",
]
