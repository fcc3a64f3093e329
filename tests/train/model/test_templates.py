"""Chat templates and multi-turn loss: model.chat_template / chat_template_kwargs, tool rendering, and the label
mask of multi-turn and tool-call chats checked token by token (SmolLM2's own template and the shipped ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pipeline.config.chat_templates import shipped_templates
from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.data_schema import DataConfig
from pipeline.config.enums import TrainOn
from pipeline.config.schema import ModelConfig
from pipeline.data.loader import load_stage_data
from pipeline.train.model.templates import (
    ChatTemplateError,
    assistant_token_rows,
    check_tool_rendering,
    configure_chat_template,
    is_multi_turn,
)
from tests.helpers.data import LLAMAFACTORY as LF
from tests.helpers.runs import REPO, compose_config

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"


@pytest.fixture
def tok():
    return AutoTokenizer.from_pretrained(str(TOKENIZER))


def registry_rows(name: str):
    return load_stage_data(DataConfig(name="lf", path="registry", dataset=name, dataset_dir=str(LF)), "sft").train


def pairs(tok, row) -> list[tuple[str, int]]:
    return [(tok.decode([i]), m) for i, m in zip(row["input_ids"], row["assistant_masks"], strict=True)]


@pytest.mark.parametrize("template", [None, "chatml"])
def test_multi_turn_mask_token_by_token(tok, template: str | None) -> None:
    configure_chat_template(tok, ModelConfig(name="t", chat_template=template))
    rows = registry_rows("sharegpt_chat").select([0])  # system, user, assistant "4", user, assistant "8"
    assert is_multi_turn(rows)
    every = pairs(tok, assistant_token_rows(rows, tok, TrainOn.all_assistant)[0])
    last = pairs(tok, assistant_token_rows(rows, tok, TrainOn.last_assistant)[0])
    text = "".join(t for t, _ in every)
    assert text == tok.apply_chat_template(rows[0]["prompt"] + rows[0]["completion"], tokenize=False)
    # exactly the reply tokens and their end-of-turn token carry loss; system/user tokens and the roles never do
    assert [t for t, m in every if m] == ["4", "<|im_end|>", "8", "<|im_end|>"]
    assert [t for t, m in last if m] == ["8", "<|im_end|>"]
    i = next(k for k, (t, _) in enumerate(every) if t == "4")
    assert every[i - 4: i + 3] == [("<|im_start|>", 0), ("ass", 0), ("istant", 0), ("\n", 0), ("4", 1),
                                   ("<|im_end|>", 1), ("\n", 0)]
    assert all(m == 0 for t, m in every[: i - 4])  # system prompt, first user turn


def test_tool_call_chat_masks_calls_and_replies_not_tool_results(tok) -> None:
    configure_chat_template(tok, ModelConfig(name="t", chat_template="qwen2.5"))
    rows = registry_rows("tool_chat")
    check_tool_rendering(tok, rows)  # the shipped qwen2.5 template renders tools
    out = assistant_token_rows(rows.select([0]), tok, TrainOn.all_assistant)[0]
    trained = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m])
    assert trained == ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
                       "It is 21 degrees and clear in Paris.<|im_end|>")
    whole = tok.decode(out["input_ids"])
    assert '"name": "get_weather", "description": "Current weather of a city"' in whole  # the tools column
    assert "<tool_response>\n" + '{"temperature": 21, "sky": "clear"}' in whole  # the observation, not trained


def test_a_template_that_drops_tools_is_refused_with_the_fix(tok) -> None:
    expected = "drops the tool schemas and the tool calls .* model.chat_template=qwen2.5"
    with pytest.raises(ChatTemplateError, match=expected):
        check_tool_rendering(tok, registry_rows("tool_chat"))
    check_tool_rendering(tok, registry_rows("sharegpt_chat"))  # no tools: nothing to check


def test_a_template_that_rewrites_earlier_turns_is_refused(tok, tmp_path: Path) -> None:
    # Qwen3-like: reasoning is kept only in the last assistant turn
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and not loop.last %}"
                "{{ m.content.split('</think>')[-1] }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    (tmp_path / "t.jinja").write_text(template)
    configure_chat_template(tok, ModelConfig(name="t", chat_template=str(tmp_path / "t.jinja")))
    rows = registry_rows("sharegpt_chat").map(
        lambda r: {"completion": [{"role": "assistant", "content": "<think>x</think>8"}]})
    rows = rows.map(lambda r: {"prompt": r["prompt"][:2] + [{"role": "assistant", "content": "<think>y</think>4"}]
                               + r["prompt"][3:]})
    with pytest.raises(ChatTemplateError, match="training row 1: .* data.train_on=last_assistant"):
        assistant_token_rows(rows, tok, TrainOn.all_assistant)
    assert assistant_token_rows(rows, tok, TrainOn.last_assistant)[0]["assistant_masks"].count(1) > 0


def test_chat_template_kwargs_are_baked_in_and_survive_saving(tok, tmp_path: Path) -> None:
    template = ("{% if enable_thinking is defined and enable_thinking is false %}NO-THINK {% endif %}"
                "{{ messages[0].content }}")
    (tmp_path / "q3.jinja").write_text(template)
    configure_chat_template(tok, ModelConfig(name="t", chat_template=str(tmp_path / "q3.jinja"),
                                             chat_template_kwargs={"enable_thinking": False}))
    chat = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(chat, tokenize=False) == "NO-THINK hi"
    tok.save_pretrained(str(tmp_path / "saved"))  # what final/ and exports carry
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert saved.apply_chat_template(chat, tokenize=False) == "NO-THINK hi"


def test_shipped_templates_and_validation() -> None:
    assert {"chatml", "qwen2.5"} <= set(shipped_templates())
    to_run_config(compose_config(["model=tiny", "stage=sft", "model.chat_template=qwen2.5",
                                  "model.chat_template_kwargs={enable_thinking: false}"]))
    with pytest.raises(ConfigError) as err:
        to_run_config(compose_config(["model=tiny", "model.chat_template=qwen9", "+model.chat_template_kwargs.a-b=1"]))
    assert "model.chat_template=qwen9: neither a file nor a shipped template. Fix: give a .jinja file or one of" in str(
        err.value)
    assert "model.chat_template_kwargs: ['a-b'] are not template variable names" in str(err.value)


def test_single_turn_rows_keep_trl_prompt_completion_path() -> None:
    rows = registry_rows("openai_chat")
    assert not is_multi_turn(rows) and set(rows.column_names) == {"prompt", "completion"}
    assert json.loads(json.dumps(rows[0]))["completion"][0]["role"] == "assistant"


def test_trl_turns_the_masks_into_labels_token_by_token(tok, tmp_path: Path) -> None:
    """The real SFTTrainer's prepared labels: the ids of assistant reply tokens, -100 everywhere else."""
    from transformers import AutoModelForCausalLM, Qwen3Config
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_config(Qwen3Config(
        vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16))
    rows = assistant_token_rows(registry_rows("sharegpt_chat").select([0, 1]), tok, TrainOn.all_assistant)
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], max_length=512)
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok)
    prepared = trainer.train_dataset[0]
    ids_labels = list(zip(prepared["input_ids"], prepared["labels"], strict=True))
    assert [tok.decode([i]) for i, label in ids_labels if label != -100] == ["4", "<|im_end|>", "8", "<|im_end|>"]
    assert all(label in (-100, i) for i, label in ids_labels)
