"""The per-episode cap on tool calls inside TRL's own loop (in process, one GRPOTrainer step on the tiny model, tool
calls scripted): with env.max_calls_per_episode=2, plain tools run as methods of a per-rollout environment, so each
rollout's third call is answered with the limit (counted as a failure) and the next rollout starts from zero."""

from __future__ import annotations

import json

import torch
from datasets import Dataset
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM
from trl import GRPOConfig

from pipeline.envs.registry import AgentSpec, build_agent
from pipeline.envs.templates import ensure_response_schema
from pipeline.train.levers.grpo_trainer import GRPOLevers, LeveredGRPOTrainer
from pipeline.train.levers.lean_lm_head import lean_lm_head
from tests.helpers.runs import REPO
from tests.helpers.scripted_tools import attended

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"
TEMPLATE = REPO / "pipeline" / "assets" / "chat_templates" / "qwen2.5.jinja"
CALL = {"name": "calculate", "arguments": {"expression": "6 * 7"}}


def test_the_third_call_of_an_episode_is_refused_and_counted(tmp_path, monkeypatch) -> None:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    tokenizer.chat_template = TEMPLATE.read_text()
    ensure_response_schema(tokenizer)
    refused: list[int] = []

    def generate(self, input_ids, attention_mask=None, **kwargs):
        replies = []
        for ids in attended(input_ids, attention_mask):  # call until the limit answers, then give the answer
            text = tokenizer.decode(ids)
            if "limit of this episode is reached" in text:
                refused.append(text.count(json.dumps(CALL)))  # the model's calls (the system prompt shows the tag too)
                replies.append("42<|im_end|>")
            else:
                replies.append(f"<tool_call>\n{json.dumps(CALL)}\n</tool_call><|im_end|>")
        ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
        width = max(map(len, ids))
        padded = [row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids]
        return torch.cat([input_ids, torch.tensor(padded)], dim=1)

    monkeypatch.setattr(Qwen3ForCausalLM, "generate", generate)
    spec = AgentSpec(tools=["calculator"])
    spec.limits = type(spec.limits)(max_calls_per_episode=2)
    agent = build_agent(spec, tokenizer)
    assert agent.tools == [] and agent.environment_factory.__name__ == "ToolBox"
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=320, report_to="none", max_steps=1, bf16=False, logging_steps=1,
                      max_tool_calling_iterations=5)
    trainer = LeveredGRPOTrainer(
        model=Qwen3ForCausalLM(config), args=args, processing_class=tokenizer,
        reward_funcs=lambda completions, **_: [float(len(c)) for c in completions],
        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 6 * 7?"}]}] * 2),
        levers=GRPOLevers(), tool_stats=agent.stats, **agent.trainer_kwargs(),
    )
    with lean_lm_head(True):
        trainer.train()
    assert agent.stats.summary()["calculate"] == {"calls": 24, "failures": 8, "timeouts": 0, "truncated": 0}
    assert refused == [3] * 8  # every rollout: two answered calls, the third refused, then its answer
    assert abs(trainer.state.log_history[0]["tools/failure_frequency"] - 8 / 24) < 1e-6  # TRL agrees (float32)
