"""The `environment` reward: an environment's own score of its episode (its `get_reward()`), as a reward term.

TRL would add every environment's `get_reward` as a reward of its own, named after the class, at weight 1. The
pipeline hides it from TRL (pipeline/envs/registry.py keeps it under EPISODE_REWARD) and scores it here instead, so
it is a term like any other: named and weighted in reward.terms, logged as rewards/<term>/mean.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from pipeline.rewards.registry import register_reward

# where the pipeline's environment classes keep the environment's own get_reward
EPISODE_REWARD = "_pipeline_episode_reward"


@register_reward("environment")
def environment(completions: list[Any], environments: list[Any] | None = None, **kwargs: Any) -> list[float | None]:
    """Each rollout's environment's get_reward(); None (not scored) where the rollout's environment has none."""
    if environments is None:
        raise ValueError("reward `environment` needs an environment (env.environment); this run has none. Fix: "
                         "another reward, or an env option with an environment (e.g. env=guess_number)")
    scores: list[float | None] = []
    for env in environments:
        score = getattr(env, EPISODE_REWARD, None)
        value = score() if callable(score) else None
        if inspect.isawaitable(value):  # an async get_reward (an LLM judge): scored here, one at a time
            value = asyncio.run(value)
        scores.append(None if value is None else float(value))
    return scores
