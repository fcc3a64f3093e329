"""Tool-call parsing for the chat templates we train with: the response template TRL reads tool calls through.

    ensure_response_schema(tokenizer)   # before GRPOTrainer(..., tools=...); idempotent
    malformed_tool_call(message)        # an assistant turn that tried to call a tool and was not parsed
    parse_reply(tokenizer, text, prefix) # generated text -> {role, content, tool_calls?} (serve, chat)

TRL 1.16 parses a completion into tool calls only through ``tokenizer.response_template`` (transformers >= 5.13;
``response_schema`` before), and sets one itself (`add_response_schema`) only when the template string equals one
of the model templates it ships. Ours are rewritten (model.chat_template=qwen2.5 is the shipped
pipeline/assets/chat_templates/qwen2.5.jinja, SmolLM2's own template renders no tools at all), so TRL raises
"Unrecognized chat template". A template that writes calls the Qwen way (ChatML turns, a call as
``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``) is parsed by TRL's own Qwen3 response template;
this module checks that by rendering a probe call, so any such template qualifies, and refuses others with the fix.
"""

from __future__ import annotations

import json
from typing import Any

_PROBE = {"name": "probe_tool", "arguments": {"probe_arg": "probe_value"}}
_QWEN_CALL = '<|im_start|>assistant\n<tool_call>\n{"name": "probe_tool", "arguments": {"probe_arg": "probe_value"}}'
_FIX = ("set model.chat_template=qwen2.5 (shipped: Qwen2.5-style tool calls), or set tokenizer.response_template "
        "to a transformers response template that parses this template's tool calls")


class ResponseSchemaError(ValueError):
    """The chat template writes tool calls in a form we have no parser for; the message says the fix."""


def ensure_response_schema(tokenizer: Any) -> Any:
    """Gives ``tokenizer`` the response template that parses its chat template's tool calls (kept if one is set)."""
    import transformers
    from packaging.version import Version
    from trl.chat_template_utils import add_response_schema, qwen3_template

    inner = getattr(tokenizer, "tokenizer", tokenizer)  # a processor parses through its tokenizer
    if getattr(inner, "response_template", None) is not None or getattr(inner, "response_schema", None) is not None:
        return tokenizer
    if not tokenizer.chat_template:
        raise ResponseSchemaError(f"the tokenizer has no chat template, so tool calls cannot be rendered or parsed. "
                                  f"Fix: {_FIX}")
    try:
        return add_response_schema(tokenizer)  # a model template TRL knows as it is
    except ValueError:
        pass
    if Version(transformers.__version__) < Version("5.13.0.dev0"):
        raise ResponseSchemaError("tool-call parsing for rewritten templates needs transformers >= 5.13 (response "
                                  "templates). Fix: upgrade transformers")
    if not _writes_qwen_calls(tokenizer):
        raise ResponseSchemaError(f"the chat template does not write tool calls as Qwen-style <tool_call> JSON inside "
                                  f"ChatML turns, and TRL does not know it. Fix: {_FIX}")
    inner.response_template = qwen3_template
    return tokenizer


def _writes_qwen_calls(tokenizer: Any) -> bool:
    chat = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": _PROBE}]}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception:  # a template that raises on tool turns cannot be parsed either
        return False
    return _QWEN_CALL in text and "</tool_call>" in text


def malformed_tool_call(message: dict[str, Any]) -> bool:
    """An assistant turn whose text holds a tool-call opening that did not parse into ``tool_calls`` (TRL falls
    back to plain text for those): what a reward term or a counter can score."""
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    return message.get("role") == "assistant" and not message.get("tool_calls") and "<tool_call>" in text


def parse_reply(tokenizer: Any, text: str, prefix: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Generated ``text`` as an assistant message, through the response template TRL parses rollouts with (set by
    ensure_response_schema first): ``{"role", "content", "tool_calls"?}``, each call ``{"type": "function",
    "function": {"name": str, "arguments": dict}}``. A call that does not parse (bad JSON, no name, arguments that
    are not an object) leaves the whole text as plain content, as TRL's fallback does: the caller never sees half a
    call. ``prefix`` is the rendered prompt (the parser needs the assistant turn's opening)."""
    kwargs = {"tools": tools} if tools else {}
    try:
        parsed = tokenizer.parse_response(text, prefix=prefix, **kwargs)
        calls = [_checked_call(call) for call in parsed.get("tool_calls") or []]
    except Exception:  # the parser's JSON errors, a region cut short by max_tokens, shapes of our own check
        return {"role": "assistant", "content": text}
    if not calls:  # a plain reply stays exactly as generated (reasoning and all)
        return {"role": "assistant", "content": text}
    content = parsed.get("content")
    return {"role": "assistant", "content": content.strip() if isinstance(content, str) else "", "tool_calls": calls}


def _checked_call(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise ValueError(f"not a tool call: {call!r}")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):  # a template that writes arguments as a JSON string
        arguments = json.loads(arguments)
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call arguments are not a JSON object: {arguments!r}")
    return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
