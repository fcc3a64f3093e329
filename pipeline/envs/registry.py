"""From a config-like description to what GRPOTrainer takes: ``tools=[...]`` and ``environment_factory=``.

    agent = build_agent(AgentSpec.from_env(cfg.env, cfg.stage.tools), tokenizer)   # what the GRPO stage does
    agent = build_agent({"tools": ["calculator", "my_pkg.tools.lookup"],
                         "environment": {"_target_": "my_pkg.envs.Maze", "size": 5},
                         "limits": {"timeout_s": 5, "max_output_tokens": 256, "max_calls_per_episode": 8}},
                        tokenizer=tokenizer)
    GRPOTrainer(..., **agent.trainer_kwargs())          # tools=..., environment_factory=...
    agent.stats.metrics()                               # tools/<name>/calls|failures|timeouts|truncated

A tool is a built-in name (calculator, python, search), a dotted path `pkg.module.function` (`pkg.module.obj.method`),
or a dict: `{name: <built-in>, **options}` or `{_target_: <callable returning a tool>, **kwargs}`. An environment is a
built-in name (guess_number), a dotted path to a class, `{_target_: <class>, **kwargs}` (the kwargs are bound; TRL
builds one instance per rollout) or `{openenv: {env: ..., action: ..., tool_name: ...}}` (adapters/openenv.py).
`environment` runs one for every row; `environments: {name: ...}` several, chosen per row by its `environment` column.
Every tool and environment method goes through limits.py; with `max_calls_per_episode` set, plain tools become
methods of each environment (or of a per-rollout ToolBox), since only an environment instance knows its episode.
Every tool's JSON schema is built here, so a missing type hint or docstring fails before training, naming the tool;
validation (pipeline/config/env_checks.py) builds the same schemas earlier still, before anything loads.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.envs.limits import ToolLimits, ToolStats, limit_environment, limit_tool, tools_environment
from pipeline.envs.loading import AgentSpecError, check_tool, import_path, resolve_path
from pipeline.envs.rewards import EPISODE_REWARD

BUILTIN_TOOLS = ("calculator", "python", "search")
BUILTIN_ENVIRONMENTS = {"guess_number": "pipeline.envs.guess_number.GuessNumber"}


@dataclass
class AgentSpec:
    """What a run's agent is; plain data, so a Hydra config group maps onto it one to one."""

    tools: list[Any] = field(default_factory=list)
    environment: Any = None
    environments: dict[str, Any] = field(default_factory=dict)
    limits: ToolLimits = field(default_factory=ToolLimits)
    max_tool_calling_iterations: int | None = None  # GRPOConfig's; kept here so one group sets the whole agent

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AgentSpecError(f"unknown agent keys {unknown}; the keys are {sorted(known)}")
        data = dict(data)
        limits = data.get("limits") or {}
        if isinstance(limits, dict):
            try:
                data["limits"] = ToolLimits(**limits)
            except TypeError as e:
                raise AgentSpecError(f"limits: {e}; the keys are {[f.name for f in fields(ToolLimits)]}") from None
        return cls(**data)

    @classmethod
    def from_env(cls, env: Any, extra_tools: Sequence[Any] = ()) -> AgentSpec:
        """The spec of the `env` config group (pipeline/config/env_schema.py) plus `stage.tools`."""
        limits = ToolLimits(timeout_s=env.timeout_s, max_output_tokens=env.max_tool_output_tokens,
                            isolation=env.isolation, memory_mb=env.memory_mb,
                            max_calls_per_episode=env.max_calls_per_episode)
        return cls(tools=[*env.tools, *extra_tools], environment=env.environment,
                   environments=dict(env.environments), limits=limits,
                   max_tool_calling_iterations=env.max_tool_calling_iterations)


@dataclass
class Agent:
    """What GRPOTrainer takes, and the counters of every call its tools make."""

    tools: list[Callable]
    environment_factory: Callable | dict[str, Callable] | None
    stats: ToolStats
    max_tool_calling_iterations: int | None = None

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"tools": self.tools or None, "environment_factory": self.environment_factory}


def build_agent(spec: AgentSpec | dict[str, Any], tokenizer: Any = None, own_reward: bool = False) -> Agent:
    """Tools and environments of ``spec``, limited and checked; ``tokenizer`` counts output tokens. ``own_reward``:
    an environment's get_reward is hidden from TRL (which would add it under the class name at weight 1) and kept
    for the `episode_reward` term (pipeline/envs/rewards.py), named and weighted in reward.terms."""
    spec = spec if isinstance(spec, AgentSpec) else AgentSpec.from_dict(spec)
    if spec.environment is not None and spec.environments:
        raise AgentSpecError("set `environment` (one for every row) or `environments` (chosen per row by the "
                             "`environment` column), not both")
    stats, limits = ToolStats(), spec.limits
    tools = [build_tool(entry) for entry in spec.tools]
    named = {None: spec.environment} if spec.environment is not None else dict(spec.environments)
    classes = {name: _environment_class(entry) for name, entry in named.items()}
    if own_reward:
        classes = {name: _reward_kept(env_cls) for name, env_cls in classes.items()}
    # plain tools have no episode; a per-episode cap needs them on an environment instance
    fold = limits.max_calls_per_episode is not None and tools
    if fold and not classes:
        classes, named = {None: tools_environment(tools, limits, stats, tokenizer)}, {None: {}}
        for method in tool_methods(classes[None]):
            check_tool(method, f"tool {method.__name__}")
        return Agent([], classes[None], stats, spec.max_tool_calling_iterations)
    factories: dict[Any, Callable] = {}
    for name, env_cls in classes.items():
        limited = limit_environment(env_cls, limits, stats, tokenizer, extra_tools=tools if fold else ())
        for method in tool_methods(limited):
            check_tool(method, f"environment {env_cls.__name__}, tool method {method.__name__}")
        kwargs = _kwargs(named[name])
        factories[name] = functools.partial(limited, **kwargs) if kwargs else limited
    plain = [] if fold else [limit_tool(t, limits, stats, tokenizer) for t in tools]
    for tool in plain:
        check_tool(tool, f"tool {tool.__name__}")
    factory = factories.get(None) if spec.environment is not None else (factories or None)
    return Agent(plain, factory, stats, spec.max_tool_calling_iterations)


def environment_classes(spec: AgentSpec) -> list[type]:
    """The environment classes ``spec`` names (imported, not instantiated): what validation checks."""
    named = [spec.environment] if spec.environment is not None else list(spec.environments.values())
    return [_environment_class(entry) for entry in named]


def _reward_kept(env_cls: type) -> type:
    """``env_cls`` with get_reward moved to EPISODE_REWARD, out of TRL's sight (None is not a function to it)."""
    reward = getattr(env_cls, "get_reward", None)
    if not callable(reward):
        return env_cls
    return type(env_cls.__name__, (env_cls,), {"get_reward": None, EPISODE_REWARD: reward,
                                               "__module__": env_cls.__module__,
                                               "__qualname__": env_cls.__qualname__, "__doc__": env_cls.__doc__})


def build_tool(entry: Any) -> Callable:
    """One tool from a built-in name, a dotted path or a dict (see the module docstring)."""
    if isinstance(entry, dict):
        entry = dict(entry)
        if "_target_" in entry:
            target = entry.pop("_target_")
            tool = import_path(target, "tool factory")(**entry)
            if not callable(tool):
                raise AgentSpecError(f"tool _target_ {target} returned {type(tool).__name__}, not a callable tool")
            return tool
        if "name" not in entry:
            raise AgentSpecError(f"a tool given as a dict needs `name` (one of {list(BUILTIN_TOOLS)}) or `_target_`, "
                                 f"got {entry}")
        return _builtin_tool(entry.pop("name"), entry)
    if not isinstance(entry, str) or not entry:
        raise AgentSpecError(f"a tool is a built-in name {list(BUILTIN_TOOLS)}, a dotted path or a dict, got {entry!r}")
    if entry in BUILTIN_TOOLS:
        return _builtin_tool(entry, {})
    if "." not in entry:
        raise AgentSpecError(f"unknown tool {entry!r}. Fix: one of {list(BUILTIN_TOOLS)}, or a dotted path "
                             f"'package.module.function' to a typed function with a Google-style docstring")
    return import_path(entry, "tool")


def _builtin_tool(name: str, options: dict[str, Any]) -> Callable:
    if name == "calculator":
        if options:
            raise AgentSpecError(f"the calculator tool takes no options, got {sorted(options)}")
        from pipeline.envs.calculator import calculate
        return calculate
    if name == "python":
        from pipeline.envs.python_tool import PythonTool
        return _construct(PythonTool, options, "python tool").run_python
    if name == "search":
        if "corpus" not in options:
            raise AgentSpecError("the search tool needs a corpus. Fix: {name: search, corpus: path/to/docs.jsonl} "
                                 "(one {\"id\", \"title\", \"text\"} object per line)")
        from pipeline.envs.search import SearchIndex
        options = {**options, "corpus": resolve_path(str(options["corpus"]))}
        return _construct(SearchIndex, options, "search tool").search
    raise AgentSpecError(f"unknown built-in tool {name!r}; the built-ins are {list(BUILTIN_TOOLS)}")


def check_builtin(entry: Any) -> None:
    """A built-in tool's (or a `_target_` factory's) options bind and its files exist; nothing is built."""
    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    if "_target_" in entry:
        target = entry.pop("_target_")
        _bind(import_path(target, "tool factory"), entry, f"tool factory {target}")
        return
    name = entry.pop("name", None)
    if name == "calculator" and entry:
        raise AgentSpecError(f"the calculator tool takes no options, got {sorted(entry)}")
    if name == "python":
        from pipeline.envs.python_tool import PythonTool
        _bind(PythonTool, entry, "python tool")
    elif name == "search":
        from pipeline.envs.search import SearchIndex
        _bind(SearchIndex, entry, "search tool")
        corpus = resolve_path(str(entry.get("corpus", "")))
        if not corpus.is_file():
            raise AgentSpecError(f"search tool: corpus {entry.get('corpus')!r} is not a file. Fix: "
                                 f"{{name: search, corpus: docs.jsonl}}, one {{\"id\", \"text\"}} object per line")
    elif name not in BUILTIN_TOOLS:
        raise AgentSpecError(f"a tool given as a dict needs `name` (one of {list(BUILTIN_TOOLS)}) or `_target_`, "
                             f"got {entry}")


def _bind(target: Any, options: dict[str, Any], what: str) -> None:
    try:
        inspect.signature(target).bind(**options)
    except TypeError as e:
        raise AgentSpecError(f"{what}: {e}; it takes {inspect.signature(target)}") from None


def _environment_class(entry: Any) -> type:
    target = entry.get("_target_") if isinstance(entry, dict) else entry
    if isinstance(entry, dict) and "openenv" in entry:
        from pipeline.envs.adapters.openenv import openenv_environment
        return _construct(openenv_environment, dict(entry["openenv"]), "openenv adapter")
    if isinstance(entry, dict) and "name" in entry and target is None:
        target = entry["name"]
    if not isinstance(target, str):
        raise AgentSpecError(f"an environment is a built-in name {list(BUILTIN_ENVIRONMENTS)}, a dotted path to a "
                             f"class, {{_target_: path, ...kwargs}} or {{openenv: {{env, action}}}}; got {entry!r}")
    if target in BUILTIN_ENVIRONMENTS:
        target = BUILTIN_ENVIRONMENTS[target]
    elif "." not in target:
        raise AgentSpecError(f"unknown environment {target!r}. Fix: one of {list(BUILTIN_ENVIRONMENTS)}, or a dotted "
                             f"path 'package.module.Class' to a class with reset() and tool methods")
    env_cls = import_path(target, "environment")
    if not inspect.isclass(env_cls):
        raise AgentSpecError(f"environment {target} is a {type(env_cls).__name__}, not a class: TRL finds tool "
                             f"methods on the class. Fix: point at the class; its kwargs go next to _target_")
    if not callable(getattr(env_cls, "reset", None)):
        raise AgentSpecError(f"environment {target} has no reset() method. Fix: add `def reset(self, **row) -> "
                             f"str | None` (TRL calls it with the row's fields before each episode)")
    return env_cls


def _kwargs(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or "openenv" in entry:
        return {}
    return {k: v for k, v in entry.items() if k not in ("_target_", "name")}


def _construct(target: Callable, options: dict[str, Any], what: str) -> Any:
    _bind(target, options, what)
    return target(**options)


def tool_methods(env_cls: type) -> list[Callable]:
    instance = object.__new__(env_cls)  # methods bound without running __init__: only their schemas are read
    return [getattr(instance, name) for name, _ in inspect.getmembers(env_cls, predicate=inspect.isfunction)
            if not name.startswith("_") and name not in ("reset", "get_reward")]
