"""Bad tools inside TRL's own loop (in process, a real GRPOTrainer step on the tiny model, tool calls scripted): a
tool that hangs 60 s, one that returns 10 MB, one that raises and one that returns an object. The step finishes in
seconds, every call is counted by kind, and the model reads an error or the truncated text instead of a crash."""

from __future__ import annotations

import json
import time

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
BAD = ("hang", "flood", "explode", "garbage")


def hang(text: str) -> str:
    """Never answers in time.

    Args:
        text: Anything.
    """
    time.sleep(60)
    return text


def flood(text: str) -> str:
    """Answers with 10 MB.

    Args:
        text: Anything.
    """
    return text * (10_000_000 // len(text))


def explode(text: str) -> str:
    """Raises.

    Args:
        text: Anything.
    """
    raise RuntimeError(f"broken on {text}")


def garbage(text: str) -> object:
    """Returns an object that is not text.

    Args:
        text: Anything.
    """
    return object()


def test_bad_tools_never_stop_the_run_and_are_counted(tmp_path, monkeypatch) -> None:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    tokenizer.chat_template = TEMPLATE.read_text()
    ensure_response_schema(tokenizer)
    seen: list[str] = []

    def generate(self, input_ids, attention_mask=None, **kwargs):
        replies = []
        for row, ids in enumerate(attended(input_ids, attention_mask)):
            text = tokenizer.decode(ids)
            if text.rstrip().endswith("</tool_response><|im_end|>\n<|im_start|>assistant"):
                seen.append(text[text.rindex("<tool_response>"):])
                replies.append("done<|im_end|>")
            else:
                call = {"name": BAD[row % 4], "arguments": {"text": "abc "}}
                replies.append(f"<tool_call>\n{json.dumps(call)}\n</tool_call><|im_end|>")
        ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
        width = max(map(len, ids))
        padded = [row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids]
        return torch.cat([input_ids, torch.tensor(padded)], dim=1)

    monkeypatch.setattr(Qwen3ForCausalLM, "generate", generate)
    spec = AgentSpec(tools=[f"{__name__}.{name}" for name in BAD])
    spec.limits = type(spec.limits)(timeout_s=1.0, max_output_tokens=16)
    agent = build_agent(spec, tokenizer)
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=160, report_to="none", max_steps=1, bf16=False, logging_steps=1)
    trainer = LeveredGRPOTrainer(
        model=Qwen3ForCausalLM(config), args=args, processing_class=tokenizer,
        reward_funcs=lambda completions, **_: [float(len(c)) for c in completions],
        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": "Use a tool."}]}] * 2),
        levers=GRPOLevers(), tool_stats=agent.stats, **agent.trainer_kwargs(),
    )
    start = time.monotonic()
    with lean_lm_head(True):  # as the GRPO stage trains on CPU
        trainer.train()
    took = time.monotonic() - start
    print(f"one step with 8 bad tool calls: {took:.1f} s")
    assert took < 60  # two 1 s timeouts, not two minutes of sleep

    counts = agent.stats.summary()
    assert counts["hang"] == {"calls": 2, "failures": 2, "timeouts": 2, "truncated": 0}
    assert counts["flood"] == {"calls": 2, "failures": 0, "timeouts": 0, "truncated": 2}
    assert counts["explode"]["failures"] == 2 and counts["garbage"]["failures"] == 2
    logged = trainer.state.log_history[0]
    assert logged["tools/hang/timeouts"] == 2.0 and logged["tools/flood/truncated"] == 2.0
    assert logged["tools/failure_frequency"] == 0.75  # TRL counted the same 6 of 8
    # what the model read back: the errors, and the cut said in the flood's result
    assert len(seen) == 8
    assert sum("hang timed out after 1 s" in s for s in seen) == 2
    assert sum("explode failed: RuntimeError: broken on abc" in s for s in seen) == 2
    assert sum("returned a object object, not text or JSON" in s for s in seen) == 2
    assert sum("[output truncated: 10.0 MB -> 16 tokens]" in s for s in seen) == 2
