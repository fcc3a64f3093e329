"""Rules of the `env` group and `stage.tools`, checked before any data or model loads: every tool and environment
the run names is imported and its JSON schema built here (the check TRL makes only at its first rollout), and the
combinations with the stage, the data and the reward terms are checked. Each message names the key and the fix.

Nothing is imported when the run has no tools (env=none, no stage.tools): the light path of validation stays light.
"""

from __future__ import annotations

from typing import Any

from pipeline.config.chat_templates import chat_template_path
from pipeline.config.enums import DataFormat
from pipeline.config.schema import RunConfig
from pipeline.config.stage_table import stage_spec
from pipeline.data.sources import peek_columns
from pipeline.envs.rewards import EPISODE_REWARD_PATH

_ISOLATION = ("thread", "process")


def env_problems(cfg: RunConfig) -> list[str]:
    env, stage_tools = cfg.env, list(getattr(cfg.stage, "tools", ()) or ())
    if not env.active and not stage_tools:
        # reward=environment with env=none is left to the term itself (it fails at its first batch, with the fix):
        # tests/test_config.py composes every reward option alone and needs it to validate
        return []
    spec = stage_spec(cfg.stage.name)
    if not spec.tools:
        # a stage that samples but has no tool loop: name its TRL trainer (RLOOConfig -> RLOOTrainer)
        trainer = str(spec.trl_config).rsplit(":", 1)[-1].replace("Config", "Trainer")
        why = f" (TRL's {trainer} has no multi-turn loop)" if spec.generates and spec.trl_config else ""
        return [f"env={env.name} with stage={cfg.stage.name}: tools and environments run inside GRPO's rollouts "
                f"only{why}. Fix: env=none (stage=sft trains on the tool-call rows of the data itself)."]
    problems = _limit_problems(env)
    if problems:  # the limits build the tools' wrappers: nothing more to learn before they are fixed
        return problems
    if env.environment is not None and env.environments:
        problems.append(f"env={env.name} sets both env.environment (one for every row) and env.environments "
                        "(chosen per row by the `environment` column). Fix: keep one of them.")
    from pipeline.envs.loading import AgentSpecError
    from pipeline.envs.registry import AgentSpec, environment_classes

    classes: list[type] = []
    try:
        spec = AgentSpec.from_env(env, stage_tools)
        classes = environment_classes(spec)
        _check_schemas(spec)
    except AgentSpecError as e:
        problems.append(f"env.tools / env.environment / stage.tools (env={env.name}): {e}")
    except ValueError as e:  # ToolLimits' own checks
        problems.append(f"env={env.name}: {e}")
    problems += _data_problems(cfg)
    problems += _environment_reward_problems(cfg, classes)
    problems += _template_problems(cfg)
    return problems


def _template_problems(cfg: RunConfig) -> list[str]:
    """A chat template file that never writes tool calls cannot render them or have them parsed (the tokenizer's
    own template is only known once it loads: pipeline/envs/templates.py checks it then, with the same fix)."""
    name = cfg.model.chat_template
    try:
        text = chat_template_path(name).read_text(encoding="utf-8") if name else None
    except (ValueError, OSError):
        return []  # the model checks report a template that is not there
    if text is None or ("tool_calls" in text and "tools" in text):
        return []
    return [f"env={cfg.env.name} with model.chat_template={name}: the template renders no tools or tool calls, so "
            "the model would never see the tools nor could its calls be parsed. Fix: model.chat_template=qwen2.5 "
            "(shipped, Qwen2.5-style tool calls) or a template that renders `tools` and `tool_calls`."]


def _limit_problems(env: Any) -> list[str]:
    problems = []
    if env.isolation not in _ISOLATION:
        problems.append(f"env.isolation={env.isolation}: use thread or process.")
    for key in ("timeout_s", "max_tool_output_tokens", "max_calls_per_episode", "max_tool_calling_iterations",
                "placeholder_rows", "memory_mb"):
        value = getattr(env, key)
        if value is not None and value <= 0:
            problems.append(f"env.{key}={value}: use a positive number, or null for no limit.")
    if env.memory_mb is not None and env.isolation != "process":
        problems.append("env.memory_mb needs env.isolation=process (a thread shares the trainer's memory).")
    return problems


def _check_schemas(spec: Any) -> None:
    """Every tool's JSON schema (type hints, docstring) as TRL will build it; tools with state are built later."""
    from pipeline.envs.loading import check_tool
    from pipeline.envs.registry import BUILTIN_TOOLS, build_tool, check_builtin, environment_classes, tool_methods

    for entry in spec.tools:
        if isinstance(entry, str) and entry not in BUILTIN_TOOLS:
            check_tool(build_tool(entry), f"tool {entry}")
        else:
            check_builtin(entry)  # built-ins and factories: their options and files, without building an index
    for env_cls in environment_classes(spec):
        for method in tool_methods(env_cls):
            check_tool(method, f"environment {env_cls.__name__}, tool method {method.__name__}")


def _data_problems(cfg: RunConfig) -> list[str]:
    env, problems = cfg.env, []
    if env.placeholder_rows is not None and env.environment is None and not env.environments:
        problems.append(f"env.placeholder_rows={env.placeholder_rows} without an environment: placeholder rows have "
                        "an empty prompt that only an environment's reset() fills. Fix: env.placeholder_rows=null "
                        "(the data rows are the prompts), or set env.environment.")
    if env.environments and env.placeholder_rows is None and cfg.data.format == DataFormat.auto:
        columns = peek_columns(cfg.data)
        if columns is not None and "environment" not in columns:
            problems.append(f"env.environments={sorted(env.environments)} picks one per row by the row's "
                            f"`environment` column, which {cfg.data.path} lacks. Fix: add it, or "
                            f"env.placeholder_rows=N (rows cycle through the environments).")
    return problems


def _reward_functions(cfg: RunConfig) -> set[str]:
    from pipeline.rewards import term_function

    if not stage_spec(cfg.stage.name).rewards:
        return set()
    return {term_function(name, term) for name, term in cfg.reward.terms.items()}


def _environment_reward_problems(cfg: RunConfig, classes: list[type]) -> list[str]:
    """An environment that scores its own episodes (get_reward) is scored through the `environment` term."""
    functions = _reward_functions(cfg)
    owning = [c.__name__ for c in classes if callable(getattr(c, "get_reward", None))]
    if owning and EPISODE_REWARD_PATH not in functions:
        return [f"env={cfg.env.name}: {', '.join(owning)} scores its episodes (get_reward), but "
                f"reward={cfg.reward.name} has no term to count it. Fix: reward=environment, or a reward option "
                f"(conf/reward/<name>.yaml, or beside it with hydra.searchpath) whose terms add "
                f"'environment: {{_target_: {EPISODE_REWARD_PATH}}}' to yours (Hydra cannot add a typed term "
                f"from the command line)."]
    if EPISODE_REWARD_PATH in functions and not owning:
        return [f"reward={cfg.reward.name} scores {EPISODE_REWARD_PATH}, but env={cfg.env.name} has no "
                "environment with get_reward() to score it. Fix: an env with an environment (e.g. "
                "env=guess_number), or drop the term."]
    return []
