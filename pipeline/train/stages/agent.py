"""What a GRPO stage hands TRL's own multi-turn loop: tools, environment factories, the cap on tool turns, the
per-tool counters. Built from the `env` group and `stage.tools` (validated before anything loaded:
pipeline/config/env_checks.py); None when the run has no tools.

TRL parses tool calls only through the tokenizer's response template, which it sets itself only for the templates
it ships; ours are rewritten (model.chat_template), so the response template is set here first
(pipeline/envs/templates.py), before GRPOTrainer reads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipeline.config.plan import RunPlan
from pipeline.envs.limits import ToolStats
from pipeline.envs.registry import AgentSpec, build_agent
from pipeline.envs.rewards import EPISODE_REWARD_PATH
from pipeline.envs.templates import ensure_response_schema
from pipeline.rewards import term_function
from pipeline.train.stages.prepare import Prepared

log = logging.getLogger(__name__)


@dataclass
class AgentInputs:
    # GRPOTrainer's tools= and environment_factory=
    trainer_kwargs: dict[str, Any]
    # GRPOConfig's max_tool_calling_iterations
    max_tool_calling_iterations: int | None
    stats: ToolStats


def agent_inputs(plan: RunPlan, prep: Prepared) -> AgentInputs | None:
    """The run's tools and environments, limited and counted (an environment that writes its own prompts trains on
    the placeholder rows prepare() made: game_rows)."""
    cfg = plan.cfg
    stage_tools = list(getattr(cfg.stage, "tools", ()) or ())
    if not cfg.env.active and not stage_tools:
        return None
    ensure_response_schema(prep.tokenizer)
    own_reward = EPISODE_REWARD_PATH in {term_function(name, term) for name, term in cfg.reward.terms.items()}
    agent = build_agent(AgentSpec.from_env(cfg.env, stage_tools), prep.tokenizer, own_reward=own_reward)
    log.info("env=%s: tools %s, environment %s, at most %s tool turns per episode, %s s per call, results cut to %s "
             "tokens", cfg.env.name, [t.__name__ for t in agent.tools] or "none", _names(agent.environment_factory),
             cfg.env.max_tool_calling_iterations, cfg.env.timeout_s, cfg.env.max_tool_output_tokens)
    return AgentInputs(agent.trainer_kwargs(), cfg.env.max_tool_calling_iterations, agent.stats)


def _names(factory: Any) -> str:
    """The environment class(es) behind a factory (a class, a functools.partial of one, or {name: factory})."""
    if factory is None:
        return "none"
    if isinstance(factory, dict):
        return ", ".join(f"{name}={_names(f)}" for name, f in factory.items())
    return getattr(getattr(factory, "func", factory), "__name__", repr(factory))
