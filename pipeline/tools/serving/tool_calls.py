"""Tools in the chat API, both ways, through the model's own chat template.

In: OpenAI's messages become the template's turns: an assistant message's `tool_calls` with their `arguments`
JSON strings read back into objects (what transformers' templates expect), a `role: tool` result tied by its
`tool_call_id` to the call it answers (and given that call's function name, which some templates write).
Out: the generated text is parsed by the response template TRL parses training rollouts with
(pipeline/envs/templates.py), so the server reads a call exactly as training did; each call gets an id and its
arguments as a JSON string, OpenAI's shape. Text whose call does not parse stays plain content, never an error.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.envs.templates import ResponseSchemaError, ensure_response_schema, parse_reply
from pipeline.tools.serving.schemas import FieldError, Message
from pipeline.train.model.templates import ChatTemplateError, check_renders_tools


def tool_support(tokenizer: Any) -> str | None:
    """Why this model cannot take tools (None: it can): its template must write tool schemas and calls, in a form
    a response template parses. Sets that response template on the tokenizer, once."""
    try:
        check_renders_tools(tokenizer, "this request has tools or tool calls")
        ensure_response_schema(tokenizer)
    except (ChatTemplateError, ResponseSchemaError) as err:
        return f"this model cannot serve tools: {err}"
    return None


def uses_tools(messages: list[Message]) -> bool:
    """The conversation already holds tool calls or tool results (so the template must render them)."""
    return any(m.tool_calls or m.role == "tool" for m in messages)


def template_turns(messages: list[Message]) -> list[dict[str, Any]]:
    """The messages as chat-template turns; FieldError for a tool result that answers no earlier call."""
    turns, called = [], {}  # call id -> function name, of the calls made so far
    for i, message in enumerate(messages):
        # Chat templates know system, user, assistant and tool; OpenAI's newer "developer" is the system prompt.
        turn: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                                "content": message.content or ""}
        if message.tool_calls:
            turn["tool_calls"] = [{"id": c.id, "type": "function",
                                   "function": {"name": c.function.name,
                                                "arguments": json.loads(c.function.arguments or "{}")}}
                                  for c in message.tool_calls]
            called.update((c.id, c.function.name) for c in message.tool_calls)
        if message.role == "tool":
            if message.tool_call_id not in called:
                raise FieldError(f"messages.{i}.tool_call_id", f"{message.tool_call_id!r} answers no earlier tool "
                                 "call. Fix: send the assistant message with its tool_calls before the role=tool "
                                 "results, each tool_call_id one of those calls' ids")
            turn.update(tool_call_id=message.tool_call_id, name=called[message.tool_call_id])
        turns.append(turn)
    return turns


@dataclass(frozen=True)
class ToolReplies:
    """How one request's generated texts become assistant messages, when tools were offered."""

    tokenizer: Any
    # the rendered prompt, ending with the assistant turn's opening (the parser starts from it)
    prefix: str
    # the offered tools' schemas: the parser types each argument by them
    tools: list[dict[str, Any]]
    # parallel_tool_calls=false: only the first call is returned
    parallel: bool = True

    def message(self, text: str) -> dict[str, Any]:
        parsed = parse_reply(self.tokenizer, text, self.prefix, self.tools)
        calls = parsed.get("tool_calls") or []
        if not calls:
            return {"role": "assistant", "content": text}
        calls = calls if self.parallel else calls[:1]
        # OpenAI sends null content beside calls when the model wrote nothing else
        return {"role": "assistant", "content": parsed["content"] or None,
                "tool_calls": [openai_call(call) for call in calls]}


def openai_call(call: dict[str, Any]) -> dict[str, Any]:
    """A parsed call in OpenAI's shape: an id the tool result will name, arguments as a JSON string."""
    function = call["function"]
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": function["name"], "arguments": json.dumps(function["arguments"], ensure_ascii=False)}}
