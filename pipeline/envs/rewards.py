"""Reward terms of tool and environment runs, given by dotted path in reward.terms (`_target_`), scored like any
other term (named and weighted there, logged as rewards/<term>/mean):

    episode_reward        an environment's own score of its episode (its get_reward()); conf/reward/environment.yaml
    malformed_tool_calls  assistant turns that tried to call a tool and did not parse; give it a negative weight

TRL would add every environment's `get_reward` as a reward of its own, named after the class, at weight 1. The
pipeline hides it from TRL (pipeline/envs/registry.py keeps it under EPISODE_REWARD) and scores it here instead.
TRL parses each assistant turn through the response template; a turn whose call is malformed (bad JSON, a missing
name) falls back to plain text, so no tool runs and nothing else counts it.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from pipeline.envs.templates import malformed_tool_call

# where the pipeline's environment classes keep the environment's own get_reward
EPISODE_REWARD = "_pipeline_episode_reward"
# reward.terms.<name>._target_ of the environment's own score
EPISODE_REWARD_PATH = f"{__name__}.episode_reward"


def episode_reward(completions: list[Any], environments: list[Any] | None = None, **kwargs: Any) -> list[float | None]:
    """Each rollout's environment's get_reward(); None (not scored) where the rollout's environment has none."""
    if environments is None:
        raise ValueError("reward episode_reward needs an environment (env.environment); this run has none. Fix: "
                         "another reward, or an env option with an environment (e.g. env=guess_number)")
    scores: list[float | None] = []
    for env in environments:
        score = getattr(env, EPISODE_REWARD, None)
        value = score() if callable(score) else None
        if inspect.isawaitable(value):  # an async get_reward (an LLM judge): scored here, one at a time
            value = asyncio.run(value)
        scores.append(None if value is None else float(value))
    return scores


def malformed_tool_calls(completions: list[Any], **kwargs: Any) -> list[float]:
    """Per completion, the number of assistant turns holding a tool-call opening that did not parse."""
    counts = []
    for completion in completions:
        turns = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        counts.append(float(sum(malformed_tool_call(turn) for turn in turns if isinstance(turn, dict))))
    return counts
