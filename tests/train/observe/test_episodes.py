"""Held-out episodes (pipeline/train/observe/episodes.py) against TRL's own rollout loop: on the same scripted model,
the same rows and the same tools, an episode's token ids, tool results and call counts are the ones GRPOTrainer's
multi-turn rollout produces (tool turns by concatenation, the turn cap, the token budget), and the held-out score
reads the answer after the tools ran. The model's `generate` is scripted, as TRL's own test_train_with_tools does."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, Qwen3ForCausalLM
from trl import GRPOConfig, GRPOTrainer

from pipeline.config.chat_templates import chat_template_path
from pipeline.envs.registry import build_agent
from pipeline.envs.templates import ensure_response_schema
from pipeline.train.observe.episodes import EvalAgent, play_episodes
from pipeline.train.observe.heldout import heldout_records
from tests.helpers.scripted_tools import expected_correct, scripted_generate
from tests.helpers.tiny_models import TOKENIZER, tiny_config


@pytest.fixture
def scripted(monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    tokenizer.chat_template = chat_template_path("qwen2.5").read_text()
    ensure_response_schema(tokenizer)
    monkeypatch.setattr(Qwen3ForCausalLM, "generate", scripted_generate(tokenizer))
    torch.manual_seed(0)
    config = tiny_config(len(tokenizer))
    config.max_position_embeddings = 1024  # the calculator's schema alone is ~200 prompt tokens
    return Qwen3ForCausalLM(config), tokenizer


def problems(pairs) -> Dataset:
    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}], "answer": str(a + b)}
                              for a, b in pairs])


PAIRS = [(4, 5), (3, 7), (6, 2), (12, 30)]  # one call; a failed call; two calls; two calls


def trl_rollouts(model, tokenizer, rows: Dataset, tools, budget: int, max_turns: int, tmp_path) -> dict:
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=budget, max_tool_calling_iterations=max_turns,
                      report_to=[], logging_steps=1)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=rows, processing_class=tokenizer, tools=tools)
    return trainer._generate_and_score_completions([dict(row) for row in rows])  # TRL's own rollout of the batch


# (tokens per episode, tool turns, calls run per problem, tool results kept): free; the turn cap stops the second
# calls; the budget cuts the second call short (no call parses); the budget drops the first results (TRL rolls
# them back and ends the episode)
CASES = [(160, 4, [1, 1, 2, 2], [True] * 4), (160, 1, [1, 1, 1, 1], [True] * 4),
         (60, 4, [1, 1, 1, 1], [True, False, True, True]), (40, 4, [1, 1, 1, 1], [False] * 4)]


@pytest.mark.parametrize(("budget", "max_turns", "calls", "results"), CASES)
def test_an_episode_is_trls_own_rollout(scripted, tmp_path, budget, max_turns, calls, results) -> None:
    model, tokenizer = scripted
    rows = problems(PAIRS)
    ours = build_agent({"tools": ["calculator"]}, tokenizer)
    episodes = play_episodes(model, tokenizer, rows, EvalAgent(ours, max_turns, budget), batch_size=3)
    theirs = build_agent({"tools": ["calculator"]}, tokenizer)
    batch = trl_rollouts(model, tokenizer, rows, theirs.tools, budget, max_turns, tmp_path)
    for i, episode in enumerate(episodes):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
        kept = batch["completion_mask"][i].bool()
        trl_ids = batch["completion_ids"][i][kept].tolist()
        assert episode.prompt_ids == prompt
        assert episode.completion_ids == trl_ids, (i, tokenizer.decode(episode.completion_ids),
                                                   tokenizer.decode(trl_ids))
        assert episode.tool_mask == batch["tool_mask"][i][kept].tolist()
    assert [e.calls for e in episodes] == calls
    assert [0 in e.tool_mask for e in episodes] == results  # (3, 7)'s error message is the longest result
    # both loops ran the same calls through the same limits
    assert ours.stats.summary() == theirs.stats.summary()


def test_held_out_accuracy_reads_the_answer_after_the_tools(scripted) -> None:
    model, tokenizer = scripted
    rows = problems(PAIRS)
    agent = EvalAgent(build_agent({"tools": ["calculator"]}, tokenizer), 4, 160)
    records = heldout_records(model, tokenizer, rows, max_new_tokens=16, batch_size=4, agent=agent)
    # a failed call (odd a) answers "unknown"; two calls answer the doubled sum (wrong); one call answers right
    assert [r["correct"] for r in records] == [expected_correct(a) for a, _ in PAIRS] == [True, False, False, False]
    assert [r["tool_calls"] for r in records] == [1, 1, 2, 2] and [r["tool_failures"] for r in records] == [0, 1, 0, 0]
    assert [r["turns"] for r in records] == [2, 2, 3, 3]
    assert records[1]["trajectory"][1]["role"] == "tool" and "error" in records[1]["trajectory"][1]["content"]
    # without tools the same model leaves a tool call as its answer: nothing is right
    plain = heldout_records(model, tokenizer, rows, max_new_tokens=48, batch_size=4)
    assert not any(r["correct"] for r in plain) and all("<tool_call>" in r["completion"] or r["completion"]
                                                        for r in plain)
