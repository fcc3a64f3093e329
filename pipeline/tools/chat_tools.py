"""The run's own tools in the terminal chat: what `env` and `stage.tools` gave GRPO's rollouts, built by the same
registry under the same limits (pipeline/envs/limits.py: time per call, output cut to env.max_tool_output_tokens,
env.max_calls_per_episode over the conversation), so the model calls the tools it was trained with.

    tools = run_tools(run_dir, tokenizer)       # None when the run had none
    tools.reset()                               # a new conversation: a new episode (the environment's reset())
    tools.call("calculate", {"expression": "2 + 3"})   # the result text, or TRL's {'error': ...} for a fault

A reply that calls tools is parsed by the response template training used (pipeline/envs/templates.py); each call
runs and its result goes back as a role=tool turn, until the model answers without a call or `max_calls` calls of
this user turn are spent (further calls are answered with that limit, and the next reply is the last).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.user_errors import UserError
from pipeline.envs.limits import ToolError, ToolStats
from pipeline.envs.loading import check_tool
from pipeline.envs.registry import Agent, AgentSpec, build_agent


class ChatToolsError(UserError, ValueError):
    """The run's tools cannot be offered in this chat; the message says why and the fix."""


@dataclass
class ChatTools:
    """Named tools (plain functions, or methods of the conversation's environment), and what the template shows."""

    factory: Callable[[], Any] | None
    plain: list[Callable]
    max_calls: int
    stats: ToolStats
    functions: dict[str, Callable] = field(default_factory=dict)
    schemas: list[dict[str, Any]] = field(default_factory=list)
    # what the environment's reset() said: it joins the next user message, as TRL appends it to the prompt
    observation: str | None = None

    def reset(self) -> None:
        env = self.factory() if self.factory is not None else None
        said = env.reset() if env is not None else None
        self.observation = said if isinstance(said, str) and said else None
        methods = [getattr(env, name) for name, _ in inspect.getmembers(type(env), predicate=inspect.isfunction)
                   if not name.startswith("_") and name not in ("reset", "get_reward")] if env is not None else []
        self.functions = {fn.__name__: fn for fn in [*self.plain, *methods]}
        self.schemas = [check_tool(fn, f"tool {name}") for name, fn in self.functions.items()]

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """The tool's result as the model reads it; a fault is TRL's `{'error': ...}` text, as in training."""
        if name not in self.functions:
            return str({"error": f"Tool {name} not found."})
        try:
            return str(self.functions[name](**arguments))
        except ToolError as err:  # the limits' message: bad arguments, a timeout, a raise, garbage
            return str({"error": str(err)})

    def user_text(self, text: str) -> str:
        said, self.observation = self.observation, None
        return f"{text}\n\n{said}" if said else text


def run_tools(run_dir: Path, tokenizer: Any, max_calls: int | None = None, environment: str | None = None
              ) -> ChatTools | None:
    """The tools of the run at `run_dir` for a chat, or None when it had none (or it is an export: no config)."""
    found = run_agent(run_dir, tokenizer)
    if found is None:
        return None
    agent, calls = found
    return chat_tools(agent, max_calls if max_calls is not None else calls, environment)


def run_agent(run_dir: Path, tokenizer: Any) -> tuple[Agent, int] | None:
    """(the run's agent, its tool turns per user turn) as its rollouts had them, or None when it had no tools.
    One agent serves many conversations (the web chat's): each chat_tools() of it is a new episode."""
    from pipeline.tools.serving.tool_calls import tool_support
    from pipeline.tools.tuned import RunDirError, run_config

    try:
        cfg = run_config(run_dir)
    except RunDirError:
        return None
    stage_tools = list(getattr(cfg.stage, "tools", ()) or ())
    if not cfg.env.active and not stage_tools:
        return None
    if (problem := tool_support(tokenizer)) is not None:
        raise ChatToolsError(f"{problem}. Or chat without them: tools=off.")
    agent = build_agent(AgentSpec.from_env(cfg.env, stage_tools), tokenizer)
    return agent, cfg.env.max_tool_calling_iterations or 4


def chat_tools(agent: Agent, max_calls: int, environment: str | None = None) -> ChatTools:
    """An agent's tools for one chat, reset for its first conversation; `environment` picks one of several."""
    factory = agent.environment_factory
    if isinstance(factory, dict):  # several environments, picked per training row: the chat needs one
        if environment not in factory:
            raise ChatToolsError(f"the run has several environments ({', '.join(map(str, factory))}). Fix: pick one "
                                 "with environment=NAME, or tools=off.")
        factory = factory[environment]
    elif environment is not None:
        raise ChatToolsError(f"environment={environment}: the run has no environments to choose from. Fix: leave "
                             "it out.")
    if max_calls < 1:
        raise ChatToolsError(f"max_tool_calls={max_calls}: use a positive number, or tools=off.")
    tools = ChatTools(factory, agent.tools, max_calls, agent.stats)
    tools.reset()
    return tools


def answer(generate: Callable[[str], str], tokenizer: Any, history: list[dict[str, Any]], tools: ChatTools,
           show: Callable[[str], None]) -> str:
    """One user turn with tools: generate, run the calls, feed the results back, until a reply without calls.
    `generate` maps the rendered prompt to the reply's text; `show` prints each call and its result."""
    from pipeline.envs.templates import parse_reply
    from pipeline.train.model.templates import chat_text

    spent = 0
    while True:
        prompt = chat_text(tokenizer, history, tools=tools.schemas, generation_prompt=True)
        text = generate(prompt)
        message = parse_reply(tokenizer, text, prompt, tools.schemas)
        calls = message.get("tool_calls")
        if not calls or spent >= tools.max_calls:
            history.append({"role": "assistant", "content": text})
            return text
        history.append(message)
        for call in calls:
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            spent += 1
            result = (tools.call(name, arguments) if spent <= tools.max_calls else
                      str({"error": f"the tool-call limit of this turn is reached ({tools.max_calls} calls); answer "
                                    "without tools"}))
            show(f"tool> {name}({json.dumps(arguments, ensure_ascii=False)}) -> {result}")
            history.append({"role": "tool", "name": name, "content": result})
