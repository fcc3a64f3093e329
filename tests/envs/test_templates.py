"""Tool-call parsing for the chat templates we train with (pipeline/envs/templates.py): the shipped qwen2.5 template
gets TRL's Qwen response template, so a call the model writes comes back as structured tool_calls; templates that
cannot render tools are refused with the fix; a template TRL knows keeps TRL's own choice."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer
from trl.chat_template_utils import parse_response, qwen2_5_chat_template, qwen3_template

from pipeline.envs.calculator import calculate
from pipeline.envs.templates import ResponseSchemaError, ensure_response_schema, malformed_tool_call, parse_reply
from tests.helpers.runs import REPO

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"
TEMPLATES = REPO / "pipeline" / "assets" / "chat_templates"


def tokenizer_with(template: str | None):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def test_the_shipped_qwen_template_parses_the_calls_it_renders() -> None:
    tokenizer = ensure_response_schema(tokenizer_with((TEMPLATES / "qwen2.5.jinja").read_text()))
    assert tokenizer.response_template == qwen3_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 6 * 7?"}], tools=[calculate],
                                           add_generation_prompt=True, tokenize=False)
    assert '"name": "calculate"' in prompt  # the tool's schema is in the prompt
    reply = '<tool_call>\n{"name": "calculate", "arguments": {"expression": "6 * 7"}}\n</tool_call><|im_end|>'
    parsed = parse_response(tokenizer, tokenizer(reply, add_special_tokens=False)["input_ids"],
                            prefix=tokenizer(prompt, add_special_tokens=False)["input_ids"], tools=[calculate])
    assert parsed["tool_calls"] == [{"type": "function",
                                     "function": {"name": "calculate", "arguments": {"expression": "6 * 7"}}}]
    assert ensure_response_schema(tokenizer) is tokenizer  # idempotent


@pytest.mark.parametrize("template", [None, "chatml"])
def test_templates_that_drop_tools_are_refused_with_the_fix(template: str | None) -> None:
    text = None if template is None else (TEMPLATES / f"{template}.jinja").read_text()
    with pytest.raises(ResponseSchemaError, match="model.chat_template=qwen2.5"):
        ensure_response_schema(tokenizer_with(text))  # None: SmolLM2's own template, which renders no tools


def test_a_template_trl_knows_keeps_trls_response_template() -> None:
    tokenizer = ensure_response_schema(tokenizer_with(qwen2_5_chat_template))
    assert tokenizer.response_template == qwen3_template


def test_a_call_that_did_not_parse_is_told_apart() -> None:
    assert malformed_tool_call({"role": "assistant", "content": '<tool_call>\n{"name": calc'})
    assert not malformed_tool_call({"role": "assistant", "content": "42"})
    assert not malformed_tool_call({"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]})


def test_malformed_calls_are_a_reward_term() -> None:
    from pipeline.rewards import get_reward

    score = get_reward("pipeline.envs.rewards.malformed_tool_calls")  # reward.terms.<name>._target_
    good = [{"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]},
            {"role": "tool", "content": "42"}, {"role": "assistant", "content": "42"}]
    bad = [{"role": "assistant", "content": '<tool_call>\n{"name": calc'},
           {"role": "assistant", "content": "<tool_call>oops</tool_call>"}]
    assert score(completions=[good, bad, "<tool_call>x"]) == [0.0, 2.0, 1.0]


CALL = '<tool_call>\n{"name": "calculate", "arguments": {"expression": "6 * 7"}}\n</tool_call>'


@pytest.mark.parametrize(("text", "content", "calls"), [
    (CALL, "", [{"expression": "6 * 7"}]),
    (f"Let me compute.\n{CALL}\n{CALL}", "Let me compute.", [{"expression": "6 * 7"}] * 2),
    ("42, no tool needed", "42, no tool needed", None),
    # malformed: cut-off JSON, no name, arguments that are not an object, a call cut short by max_tokens
    ('<tool_call>\n{"name": "calculate", "arguments": {"expression": \n</tool_call>', None, None),
    ('<tool_call>\n{"nam": "calculate", "arguments": {}}\n</tool_call>', None, None),
    ('<tool_call>\n{"name": "calculate", "arguments": ["6 * 7"]}\n</tool_call>', None, None),
    ('<tool_call>\n{"name": "calc', None, None),
])
def test_replies_parse_into_calls_or_stay_plain_text(text: str, content: str | None, calls: list | None) -> None:
    """What serve and chat read out of a reply: the calls through TRL's response template, or the whole text
    untouched when any call in it is malformed (never half a call)."""
    tokenizer = ensure_response_schema(tokenizer_with((TEMPLATES / "qwen2.5.jinja").read_text()))
    prefix = tokenizer.apply_chat_template([{"role": "user", "content": "6 * 7?"}], tools=[calculate],
                                           add_generation_prompt=True, tokenize=False)
    message = parse_reply(tokenizer, text, prefix)
    if calls is None:
        assert message == {"role": "assistant", "content": text}
    else:
        assert message["content"] == content
        assert [c["function"]["arguments"] for c in message["tool_calls"]] == calls
        assert {c["function"]["name"] for c in message["tool_calls"]} == {"calculate"}
