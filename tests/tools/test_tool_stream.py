"""The streamed answer with tools offered (pipeline/tools/serving/tool_stream.py), piece by piece: content goes out
until a call may start (an opening split over two pieces is held, not leaked), the calls come out at the end as
OpenAI's tool_call deltas, and text with no parsed call comes out whole. The real tokenizer, template and parser."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from pipeline.config.chat_templates import chat_template_path
from pipeline.tools.serving.tool_calls import ToolReplies, tool_support
from pipeline.tools.serving.tool_stream import ToolStream
from pipeline.train.model.templates import chat_text
from tests.helpers.runs import REPO

TOOLS = [{"type": "function", "function": {"name": "calculate", "description": "Evaluate arithmetic.", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]
CALL = '<tool_call>\n{"name": "calculate", "arguments": {"expression": "2 + 3"}}\n</tool_call>'


@pytest.fixture(scope="module")
def replies() -> ToolReplies:
    tokenizer = AutoTokenizer.from_pretrained(REPO / "pipeline" / "assets" / "smollm2_tokenizer")
    tokenizer.chat_template = chat_template_path("qwen2.5").read_text()
    assert tool_support(tokenizer) is None
    prefix = chat_text(tokenizer, [{"role": "user", "content": "2 + 3?"}], tools=TOOLS, generation_prompt=True)
    return ToolReplies(tokenizer, prefix, TOOLS)


def play(stream: ToolStream, pieces: list[str], reason: str = "stop") -> tuple[list[str], list[dict], str]:
    sent = [text for text, _ in (stream.feed(p) for p in pieces) if text]
    rest, _, calls, reason = stream.finish(reason)
    return sent + ([rest] if rest else []), calls, reason


def test_content_streams_until_the_call_and_the_call_comes_as_deltas(replies: ToolReplies) -> None:
    sent, calls, reason = play(ToolStream(replies), ["Let me ", "check.\n<tool", "_call>\n{\"name\"", CALL[19:]])
    assert "".join(sent) == "Let me check.\n" and all("<" not in s for s in sent)  # "<tool" was held
    assert reason == "tool_calls"
    head, arguments = calls
    assert head["index"] == 0 and head["type"] == "function" and head["id"].startswith("call_")
    assert head["function"] == {"name": "calculate", "arguments": ""}
    assert arguments == {"index": 0, "function": {"arguments": json.dumps({"expression": "2 + 3"})}}


def test_a_held_prefix_that_is_no_call_and_a_malformed_call_come_out_as_content(replies: ToolReplies) -> None:
    sent, calls, reason = play(ToolStream(replies), ["a <to", "y> b"])
    assert sent == ["a ", "<toy> b"] and calls == [] and reason == "stop"
    broken = '<tool_call>\n{"name": "calculate", "arguments": {"expression": \n</tool_call>'
    sent, calls, reason = play(ToolStream(replies), [broken[:9], broken[9:]], "stop")
    assert "".join(sent) == broken and calls == [] and reason == "stop"
    sent, calls, reason = play(ToolStream(replies), [CALL[:30]], "length")  # cut by max_tokens
    assert "".join(sent) == CALL[:30] and calls == [] and reason == "length"
