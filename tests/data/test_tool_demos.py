"""The built-in arithmetic set for the calculator recipe: a second operand range of its own (3-digit x 2-digit) and
SFT rows as tool-use demonstrations that train on the model's own turns (the call and the answer), never on the
tool's result, rendered with the calculator schema GRPO's rollouts show."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from pipeline.config.chat_templates import chat_template_path
from pipeline.config.enums import TrainOn
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from pipeline.train.model.templates import assistant_token_rows, is_multi_turn
from tests.helpers.runs import REPO, compose_config

PRODUCTS = ["data.arithmetic.ops=[*]", "data.arithmetic.low=100", "data.arithmetic.high=999",
            "data.arithmetic.low_b=10", "data.arithmetic.high_b=99", "data.arithmetic.num_train=6",
            "data.arithmetic.num_eval=3"]


def data(stage: str, *extra: str):
    cfg = OmegaConf.to_object(compose_config([f"stage={stage}", *PRODUCTS, *extra]))
    return load_stage_data(cfg.data, stage, cfg.seed)


def test_demonstrations_call_the_calculator_and_train_on_the_models_turns_only() -> None:
    rows = data("sft", "data.arithmetic.tool_demos=true")
    first = rows.train[0]
    a, b = map(int, first["prompt"][-1]["content"].removeprefix("What is ").split("?")[0].split(" * "))
    assert 100 <= a <= 999 and 10 <= b <= 99
    call, result, answer = first["completion"]
    assert call["tool_calls"][0]["function"] == {"name": "calculate", "arguments": {"expression": f"{a} * {b}"}}
    assert result["role"] == "tool" and result["content"] == answer["content"] == str(a * b)
    assert json.loads(first["tools"])[0]["function"]["name"] == "calculate"
    # held-out problems stay plain prompt/answer rows (scored with the tools by the held-out episodes)
    assert set(rows.eval_prompts.column_names) == {"prompt", "answer"}

    # stage=sft masks these rows per turn (TRL's prompt-completion path would train on the tool's result too)
    assert is_multi_turn(rows.train)
    tokenizer = AutoTokenizer.from_pretrained(REPO / "pipeline" / "assets" / "smollm2_tokenizer")
    tokenizer.chat_template = chat_template_path("qwen2.5").read_text()
    masked = assistant_token_rows(rows.train.select([0]), tokenizer, TrainOn.all_assistant)[0]
    trained = tokenizer.decode([t for t, m in zip(masked["input_ids"], masked["assistant_masks"], strict=True) if m])
    assert '<tool_call>\n{"name": "calculate", "arguments": {"expression": "' in trained
    assert trained.endswith(f"{a * b}<|im_end|>") and "<tool_response>" not in trained
    # GRPO reads the same problems plainly: the rollouts call the tool themselves
    assert data("grpo", "data.arithmetic.tool_demos=true").train[0]["answer"] == str(a * b)


def test_a_second_operand_range_upside_down_is_refused() -> None:
    with pytest.raises(DataError, match="low_b=90 is above high_b=20"):
        data("sft", "data.arithmetic.low_b=90", "data.arithmetic.high_b=20")
