"""Held-out problems played as GRPO rollouts are: the run's tools and environment, multi-turn, under the same limits.

    agent = eval_agent(cfg, tokenizer)                # None: the run has no tools (or eval.tools=false)
    records = episode_records(model, tokenizer, problems, agent, batch_size=8)

Each episode follows TRL 1.16's own rollout loop (GRPOTrainer._generate / _tool_call_loop) step for step, greedy
instead of sampled: the environment's reset(**row) text joins the last user message; the prompt is rendered with the
tools (plain tools + the environment's public methods); a reply is parsed through the response template
(trl.chat_template_utils.parse_response, what TRL parses rollouts with); each call runs through the tools built by
the same registry under the env group's limits (time, output cut, call cap), a fault becomes `{'error': ...}`; the
tool turns are appended by token concatenation (TRL's tool suffix), up to env.max_tool_calling_iterations tool turns
and stage.max_completion_length tokens per episode (tool results included), a tool result that would pass it ending
the episode as TRL does. Between turns the batch keeps its key/value cache (turn_cache.py): a turn forwards the tool
results alone, not the whole episode again, with the replies a fresh prefill gives. TRL's loop lives in private
methods of a trainer built for training (a train set, an optimizer, sampling), which a finished run's evaluation has
none of: this module replays it with public pieces, and tests/train/observe/test_episodes.py holds it to TRL's
trajectories on the same scripted model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.envs.registry import Agent, AgentSpec, build_agent
from pipeline.train.observe.turn_cache import TurnCache


@dataclass
class EvalAgent:
    """The run's tools for evaluation, and the bounds of one episode."""

    agent: Agent
    # tool turns per episode (env.max_tool_calling_iterations); None: until the token budget runs out
    max_turns: int | None
    # tokens per episode, tool results included (what stage.max_completion_length bounds in rollouts)
    budget: int


def has_tools(cfg: Any) -> bool:
    """Whether the run gave its rollouts tools or an environment (env group, stage.tools)."""
    return bool(cfg.env.active or list(getattr(cfg.stage, "tools", ()) or ()))


def eval_agent(cfg: Any, tokenizer: Any, budget: int | None = None) -> EvalAgent | None:
    """The run's tools and environment as its rollouts had them, or None when it had none or eval.tools is off."""
    if not has_tools(cfg) or not cfg.eval.tools:
        return None
    from pipeline.envs.templates import ensure_response_schema

    ensure_response_schema(tokenizer)  # tool calls parse through the template training parsed them with
    agent = build_agent(AgentSpec.from_env(cfg.env, list(getattr(cfg.stage, "tools", ()) or ())), tokenizer)
    limit = budget or getattr(cfg.stage, "max_completion_length", None) or cfg.stage.eval_max_new_tokens
    return EvalAgent(agent, cfg.env.max_tool_calling_iterations, limit)


class Episode:
    """One problem played out: the conversation, its token ids (prompt + completion) and what the tools did."""

    def __init__(self, row: dict[str, Any], agent: Agent, tokenizer: Any) -> None:
        factory = agent.environment_factory
        if isinstance(factory, dict):  # several environments: the row's `environment` column picks one
            factory = factory[row["environment"]]
        self.env = factory() if factory is not None else None
        prompt = list(row["prompt"])
        if self.env is not None:
            reset_kwargs = {k: v for k, v in row.items() if k != "environment"}
            said = self.env.reset(**reset_kwargs)
            if isinstance(said, str):
                prompt = prompt[:-1] + [{**prompt[-1], "content": prompt[-1]["content"] + said}]
        methods = [getattr(self.env, name) for name, _ in inspect.getmembers(type(self.env), inspect.isfunction)
                   if name not in ("reset", "get_reward") and not name.startswith("_")] if self.env else []
        self.tools = [*agent.tools, *methods]
        self.functions = {tool.__name__: tool for tool in self.tools}
        self.row, self.prompt, self.messages = row, prompt, []
        self.prompt_ids = tokenizer.apply_chat_template(
            conversation=[prompt], tools=self.tools or None, add_generation_prompt=True, tokenize=True,
            return_dict=True)["input_ids"][0]
        self.completion_ids: list[int] = []
        self.tool_mask: list[int] = []  # TRL's: 1 for the model's tokens, 0 for tool results
        self.calls = self.failures = self.turns = 0
        self.pending: list[dict[str, Any]] = []  # the tool calls of the last reply, not yet run

    def add_reply(self, tokenizer: Any, ids: list[int]) -> None:
        from trl.chat_template_utils import parse_response

        prefix = self.prompt_ids + self.completion_ids
        self.completion_ids = self.completion_ids + ids
        self.tool_mask = self.tool_mask + [1] * len(ids)
        reply = parse_response(tokenizer, ids, prefix=prefix, tools=self.tools) if ids else {}
        if reply:
            self.messages.append(reply)
        self.pending = list(reply.get("tool_calls") or [])

    def run_tools(self, tokenizer: Any, budget: int, context: int) -> bool:
        """Runs the pending calls and appends their results; False (results dropped, as TRL drops them) when they
        would push the episode past `budget` tokens or the model's context."""
        results = []
        for call in self.pending:
            self.calls += 1
            function = call["function"] if call.get("type") == "function" else None
            name = function["name"] if function else call.get("name", "unknown")
            try:
                if function is None:
                    raise ValueError(f"Unsupported tool call type: {call.get('type')}")
                if name not in self.functions:
                    raise ValueError(f"Tool {name} not found.")
                result = self.functions[name](**function["arguments"])
            except Exception as err:  # TRL's loop: the model reads the error, the run goes on
                self.failures += 1
                result = {"error": str(err)}
            results.append({"role": "tool", "name": name, "content": result if isinstance(result, list)
                            else str(result)})
        self.pending = []
        suffix = tool_suffix_ids(tokenizer, results)
        if len(self.completion_ids) + len(suffix) > budget or \
                len(self.prompt_ids) + len(self.completion_ids) + len(suffix) >= context:
            return False
        self.messages.extend(results)
        self.completion_ids = self.completion_ids + suffix
        self.tool_mask = self.tool_mask + [0] * len(suffix)
        self.turns += 1
        return True

    def record(self) -> dict[str, Any]:
        """{completion (the last assistant text), trajectory, turns, tool_calls, tool_failures, reward?}."""
        answers = [m for m in self.messages if m.get("role") == "assistant"]
        content = answers[-1].get("content") if answers else ""
        out = {"completion": content if isinstance(content, str) else "", "trajectory": self.messages,
               "turns": len(answers), "tool_calls": self.calls, "tool_failures": self.failures}
        reward = getattr(self.env, "get_reward", None)
        if callable(reward):
            out["reward"] = float(reward())
        return out


def tool_suffix_ids(tokenizer: Any, tool_messages: list[dict[str, Any]]) -> list[int]:
    """The tokens a tool turn adds after the assistant's end of turn, rendered the way TRL renders them: a dummy
    call with and without the results, the difference after the last EOS (GRPOTrainer._get_tool_suffix_ids)."""
    calls = [{"type": "function", "function": {"name": tool_messages[0]["name"], "arguments": {}}}]
    dummy = [{"role": "user", "content": "dummy"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    prefix = tokenizer.apply_chat_template(dummy, add_generation_prompt=False, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(dummy + tool_messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=False)
    ends = [i for i, tok in enumerate(prefix) if tok == tokenizer.eos_token_id]
    if ends:
        prefix = prefix[: ends[-1] + 1]
    if full[: len(prefix)] != prefix:
        raise ValueError("the chat template renders a tool turn that does not extend the assistant's turn")
    return full[len(prefix):]


def episode_records(model: Any, tokenizer: Any, problems: Any, agent: EvalAgent, *, batch_size: int) -> list[dict]:
    """Per problem: its episode's record (see Episode.record), with `prompt` and (where the rows have one) `answer`."""
    records = []
    for episode in play_episodes(model, tokenizer, problems, agent, batch_size=batch_size):
        record = {"prompt": episode.prompt[-1]["content"], **episode.record()}
        if "answer" in episode.row:
            record["answer"] = episode.row["answer"]
        records.append(record)
    return records


@torch.no_grad()
def play_episodes(model: Any, tokenizer: Any, problems: Any, agent: EvalAgent, *, batch_size: int) -> list[Episode]:
    """Every problem played to its end: greedy, batched over problems turn by turn; the model's mode is restored."""
    was_training = model.training
    model.eval()
    episodes: list[Episode] = []
    try:
        for start in range(0, len(problems), batch_size):
            rows = problems.select(range(start, min(start + batch_size, len(problems))))
            batch = [Episode(dict(row), agent.agent, tokenizer) for row in rows]
            _play(model, tokenizer, batch, agent)
            episodes += batch
    finally:
        model.train(was_training)
    return episodes


def _play(model: Any, tokenizer: Any, episodes: list[Episode], agent: EvalAgent) -> None:
    turns, active, iteration = TurnCache(model, tokenizer, agent.budget), list(episodes), 0
    for episode, ids in zip(active, turns.replies(active), strict=True):
        episode.add_reply(tokenizer, ids)
    while True:
        calling = [e for e in active if e.pending]
        if not calling or (agent.max_turns is not None and iteration >= agent.max_turns):
            return
        context = getattr(model.config, "max_position_embeddings", None) or 1 << 62  # TRL's ceiling too
        active = [e for e in calling if e.run_tools(tokenizer, agent.budget, context)]
        if not active:
            return
        for episode, ids in zip(active, turns.replies(active), strict=True):
            episode.add_reply(tokenizer, ids)
        iteration += 1
