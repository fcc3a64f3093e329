"""The guess_number recipe's warm start (builtin:guess_number): games played by bisection against the game itself,
each move consistent with the game's replies, the prompt and tool schema exactly what GRPO's rollouts render, and
SFT trained on the model's moves only (never on the game's replies)."""

from __future__ import annotations

import json
import math
import re

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from transformers.utils import get_json_schema

from pipeline.config.chat_templates import chat_template_path
from pipeline.config.enums import TrainOn
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from pipeline.envs.registry import AgentSpec, build_agent
from pipeline.train.model.templates import assistant_token_rows, is_multi_turn
from tests.helpers.runs import REPO, compose_config

GAME = ["data.path=builtin:guess_number", "data.guess_number.low=1", "data.guess_number.high=32",
        "data.guess_number.num_train=24"]


def rows(stage: str = "sft"):
    cfg = OmegaConf.to_object(compose_config([f"stage={stage}", *GAME]))
    return load_stage_data(cfg.data, stage, cfg.seed)


def test_each_demonstration_finds_the_number_by_bisection_consistently_with_the_replies() -> None:
    data = rows()
    assert len(data.train) == 24 and data.eval_prompts is None
    answers = set()
    for row in data.train:
        *moves, last = row["completion"]
        calls = [m["tool_calls"][0]["function"] for m in moves[::2]]
        replies = [m["content"] for m in moves[1::2]]
        assert {c["name"] for c in calls} == {"guess"} and all(m["role"] == "tool" for m in moves[1::2])
        guesses = [c["arguments"]["number"] for c in calls]
        secret = int(re.fullmatch(r"The number is (\d+)\.", last["content"]).group(1))
        assert guesses[-1] == secret and replies[-1].startswith("Correct!")
        low, high = 1, 32
        for guess, reply in zip(guesses[:-1], replies[:-1], strict=True):
            assert guess == (low + high) // 2  # the middle of the range the game's last reply stated
            assert reply.startswith("higher" if secret > guess else "lower"), (guess, secret, reply)
            low, high = map(int, re.search(r"between (\d+) and (\d+)", reply).groups())
            assert low <= secret <= high
        assert len(guesses) <= math.ceil(math.log2(33))  # bisection's bound on 1..32, within max_guesses=7
        assert guesses[0] == 16 and all(m["content"] == "" for m in moves[::2])
        answers.add(secret)
    assert len(answers) >= 12  # secrets drawn from the seed, not one game repeated


def test_prompt_and_tool_schema_are_what_the_environments_rollouts_render() -> None:
    row = rows().train[0]
    cfg = OmegaConf.to_object(compose_config(["env=guess_number", "model.chat_template=qwen2.5",
                                              "env.environment.high=32"]))
    env = build_agent(AgentSpec.from_env(cfg.env)).trainer_kwargs()["environment_factory"]()
    # TRL appends reset()'s rules to the placeholder row's empty user message and renders the bound tool's schema
    assert row["prompt"] == [{"role": "user", "content": "" + env.reset(seed=0)}]
    assert json.loads(row["tools"]) == [get_json_schema(env.guess)]

    tokenizer = AutoTokenizer.from_pretrained(REPO / "pipeline" / "assets" / "smollm2_tokenizer")
    tokenizer.chat_template = chat_template_path("qwen2.5").read_text()
    assert is_multi_turn(rows().train)  # stage=sft trains through these masks, not TRL's whole-completion one
    masked = assistant_token_rows(rows().train.select([0]), tokenizer, TrainOn.all_assistant)[0]
    trained = tokenizer.decode([t for t, m in zip(masked["input_ids"], masked["assistant_masks"], strict=True) if m])
    assert trained.startswith('<tool_call>\n{"name": "guess", "arguments": {"number": 16}}\n</tool_call><|im_end|>')
    assert "<tool_response>" not in trained and "higher" not in trained and "lower" not in trained


def test_a_grpo_step_is_pointed_at_the_game_itself() -> None:
    with pytest.raises(DataError, match="cannot train on game demonstrations.*env=guess_number"):
        rows("grpo")
