"""The run's tools as the terminal chat offers them (pipeline/tools/chat_tools.py), built from agent specs as the
registry builds a run's: the limits of training hold (the per-episode cap counts over a conversation and /reset
starts a new one), faults are TRL's `{'error': ...}` text, an environment is reset per conversation and its reset
text joins the next message, and one of several environments must be picked. No model: the tools alone."""

from __future__ import annotations

import pytest

from pipeline.envs.registry import build_agent
from pipeline.tools.chat_tools import ChatToolsError, chat_tools


def test_the_episode_cap_counts_over_the_conversation_and_reset_starts_a_new_one() -> None:
    tools = chat_tools(build_agent({"tools": ["calculator"], "limits": {"max_calls_per_episode": 1}}), max_calls=4)
    assert list(tools.functions) == ["calculate"] and tools.schemas[0]["function"]["name"] == "calculate"
    assert tools.call("calculate", {"expression": "1 + 1"}) == "2"
    assert "tool-call limit of this episode is reached (1 calls)" in tools.call("calculate", {"expression": "2 + 2"})
    tools.reset()
    assert tools.call("calculate", {"expression": "2 + 2"}) == "4"
    assert tools.stats["calculate"].calls == 3 and tools.stats["calculate"].failures == 1


def test_faults_are_the_error_text_the_model_saw_in_training() -> None:
    tools = chat_tools(build_agent({"tools": ["calculator"]}), max_calls=4)
    assert tools.call("search", {"query": "x"}) == "{'error': 'Tool search not found.'}"
    bad = tools.call("calculate", {"expr": "1 + 1"})
    assert bad.startswith("{'error': 'bad arguments for calculate") and tools.stats["calculate"].failures == 1


def test_an_environment_is_reset_per_conversation_and_its_text_joins_the_next_message() -> None:
    tools = chat_tools(build_agent({"environment": "guess_number"}), max_calls=4)
    assert list(tools.functions) == ["guess"] and tools.observation
    rules = tools.observation
    assert tools.user_text("let's play") == f"let's play\n\n{rules}" and tools.user_text("again") == "again"
    assert "error" not in tools.call("guess", {"number": 5})


def test_one_of_several_environments_must_be_picked() -> None:
    agent = build_agent({"environments": {"small": "guess_number", "large": "guess_number"}})
    with pytest.raises(ChatToolsError, match="several environments \\(small, large\\). Fix: pick one with "
                                             "environment=NAME"):
        chat_tools(agent, max_calls=4)
    assert list(chat_tools(agent, max_calls=4, environment="large").functions) == ["guess"]
    with pytest.raises(ChatToolsError, match="no environments to choose from"):
        chat_tools(build_agent({"tools": ["calculator"]}), max_calls=4, environment="large")
    with pytest.raises(ChatToolsError, match="max_tool_calls=0: use a positive number"):
        chat_tools(build_agent({"tools": ["calculator"]}), max_calls=0)


def test_the_chat_shows_the_environments_opening_and_the_model_reads_it() -> None:
    import io

    import torch
    from transformers import AutoTokenizer

    from pipeline.tools.chat import chat
    from tests.helpers.runs import REPO

    tokenizer = AutoTokenizer.from_pretrained(REPO / "pipeline" / "assets" / "smollm2_tokenizer")
    tokenizer.chat_template = (REPO / "pipeline" / "assets" / "chat_templates" / "qwen2.5.jinja").read_text()
    prompts = []

    class Model:  # answers "ok" and records what it was shown
        device = torch.device("cpu")

        def generate(self, input_ids, **kwargs):
            prompts.append(tokenizer.decode(input_ids[0]))
            return torch.cat([input_ids, torch.tensor([tokenizer("ok")["input_ids"]])], dim=1)

    tools = chat_tools(build_agent({"environment": "guess_number"}), max_calls=4)
    rules = tools.observation
    out = io.StringIO()
    history = chat(Model(), tokenizer, io.StringIO("hi\n/reset\n"), out, max_new_tokens=4, tools=tools)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"environment> {rules}".splitlines()[0] and "assistant> ok" in lines
    assert lines.count("(conversation cleared)") == 1 and sum(line.startswith("environment> ") for line in lines) == 2
    assert rules in prompts[0] and '"name": "guess"' in prompts[0]  # the opening and the tool, as in training
    assert history == []  # /reset forgot the turn
