"""OpenEnv environments as TRL environments, unchanged: ``reset()`` / ``step(Action)`` become TRL's ``reset(**row)``,
one tool whose arguments are the Action's fields, and ``get_reward()`` from the rewards the steps returned.

    from my_env.server import WordleEnvironment        # an openenv.core Environment (in this process), or
    from my_env.models import WordleAction             # a client: lambda: WordleEnv(base_url=...).sync()
    Wordle = openenv_environment(WordleEnvironment, WordleAction, tool_name="guess")
    GRPOTrainer(..., environment_factory=Wordle, train_dataset=placeholder_rows(64))

OpenEnv (pip package `openenv`) puts the game behind Gym-style calls on a pydantic Action and Observation; TRL wants
a class whose public methods are typed, documented tools. The generated class builds one OpenEnv environment (or
client) per instance (TRL makes one per rollout and reuses it across batches), so a server's concurrent sessions map
onto rollouts. The tool's signature and docstring come from the Action's fields (annotations, defaults, `Field`
descriptions; the base class's `metadata` field is left out), so the schema the model sees is the Action's.
`reset` forwards only `seed` / `episode_id` from the row (OpenEnv's own reset arguments; a row's other columns,
the prompt among them, would be unexpected keywords) and returns the first observation as the prompt text. After
`done`, further calls answer that the episode is over instead of stepping a finished game. Nothing is imported from
`openenv` here (its package imports gradio and the MCP stack): environments and clients are duck-typed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable
from typing import Any, Literal

_OBSERVATION_BOOKKEEPING = {"done", "reward", "metadata"}


def openenv_environment(env: Callable[[], Any] | str, action: type | str, tool_name: str | None = None,
                        description: str | None = None, render: Callable[[Any], str] | None = None,
                        reward: Literal["sum", "last"] = "sum", name: str | None = None) -> type:
    """A TRL environment class around an OpenEnv environment.

    Args:
        env: An OpenEnv Environment class (or any no-argument factory of an environment or a sync client), or its
            dotted path.
        action: The environment's Action class (a pydantic model), or its dotted path.
        tool_name: The tool's name; by default the action class's name without "Action", in snake case.
        description: The tool's description for the model; by default the action class's docstring.
        render: Observation -> text shown to the model; by default its fields other than done/reward/metadata.
        reward: "sum" of the step rewards (the episode's return) or the "last" one, as get_reward().
        name: The class name (TRL logs get_reward under it); by default the environment's.
    """
    factory = _load(env, "env")
    action_cls = _load(action, "action")
    fields = getattr(action_cls, "model_fields", None)
    if not isinstance(fields, dict):
        raise TypeError(f"openenv_environment: action {action_cls!r} is not a pydantic model class (an OpenEnv "
                        f"Action subclass). Fix: pass the environment's Action class")
    if reward not in ("sum", "last"):
        raise ValueError(f"openenv_environment: reward must be 'sum' or 'last', got {reward!r}")
    fields = {k: f for k, f in fields.items() if k != "metadata"}
    tool = _tool(action_cls, fields, tool_name or _snake(action_cls.__name__.removesuffix("Action")) or "act",
                 description or inspect.getdoc(action_cls) or f"Take one action ({action_cls.__name__}).")
    show = render or render_observation

    def __init__(self: Any) -> None:
        self._env = factory()
        self._rewards: list[float] = []
        self.done = False

    def reset(self: Any, seed: int | None = None, episode_id: str | None = None, **row: Any) -> str | None:
        kwargs = {k: v for k, v in (("seed", seed), ("episode_id", episode_id)) if v is not None}
        observation, _, self.done = _unpack(self._env.reset(**kwargs))
        self._rewards = []
        text = show(observation)
        return text or None

    def get_reward(self: Any) -> float:
        if not self._rewards:
            return 0.0
        return float(sum(self._rewards) if reward == "sum" else self._rewards[-1])

    def _step(self: Any, **arguments: Any) -> str:
        if self.done:
            return "The episode is over; give your final answer."
        observation, step_reward, self.done = _unpack(self._env.step(action_cls(**arguments)))
        if step_reward is not None:
            self._rewards.append(float(step_reward))
        text = show(observation)
        return f"{text}\n(The episode is over.)" if self.done else text

    class_name = name or getattr(factory, "__name__", None) or "OpenEnvEnvironment"
    if not class_name.isidentifier():  # a lambda's "<lambda>"
        class_name = "OpenEnvEnvironment"
    namespace = {"__init__": __init__, "reset": reset, "get_reward": get_reward, "_step": _step, tool.__name__: tool,
                 "__doc__": f"OpenEnv {class_name} through pipeline.envs.adapters.openenv.", "__module__": __name__}
    return type(class_name, (), namespace)


def render_observation(observation: Any) -> str:
    """An observation's own fields as text: one field as its value, several as JSON (done/reward/metadata left out)."""
    if observation is None:
        return ""
    if hasattr(observation, "model_dump"):
        data = observation.model_dump()
    elif isinstance(observation, dict):
        data = dict(observation)
    else:
        return str(observation)
    data = {k: v for k, v in data.items() if k not in _OBSERVATION_BOOKKEEPING}
    if len(data) == 1:
        (value,) = data.values()
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return json.dumps(data, ensure_ascii=False, default=str)


def _unpack(result: Any) -> tuple[Any, float | None, bool]:
    """(observation, reward, done) from an Environment's Observation or a client's StepResult."""
    if hasattr(result, "observation"):  # StepResult from an EnvClient
        return result.observation, result.reward, bool(result.done)
    return result, getattr(result, "reward", None), bool(getattr(result, "done", False))


def _tool(action_cls: type, fields: dict[str, Any], tool_name: str, description: str) -> Callable:
    """A method whose signature and Google docstring are the Action's fields: what TRL builds the schema from."""
    if not tool_name.isidentifier():
        raise ValueError(f"openenv_environment: tool_name {tool_name!r} is not a Python identifier")
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    lines = []
    for key, field in fields.items():
        default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        parameters.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=field.annotation))
        annotations[key] = field.annotation
        text = " ".join((field.description or f"The {key} of the {action_cls.__name__}.").split())
        lines.append(f"    {key}: {text}")
    annotations["return"] = str

    def tool(self: Any, **arguments: Any) -> str:
        return self._step(**arguments)

    tool.__name__ = tool.__qualname__ = tool_name
    tool.__signature__ = inspect.Signature(parameters, return_annotation=str)
    tool.__annotations__ = annotations
    summary = " ".join(description.split())
    args = "\n\nArgs:\n" + "\n".join(lines) if lines else ""
    tool.__doc__ = f"{summary}{args}\n\nReturns:\n    What the environment observes after the action."
    return tool


def _load(value: Any, what: str) -> Any:
    if not isinstance(value, str):
        return value
    module_name, _, attribute = value.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as e:
        raise ImportError(f"openenv_environment: {what}={value!r} cannot be imported ({e}). Fix: a dotted path "
                          f"'package.module.Name' to the OpenEnv {what} class, importable here") from None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
