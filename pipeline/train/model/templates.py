"""The chat template every step uses (training, held-out evaluation, the reward model, chat, serve, export): the one
path from turns to text and token ids, tool rendering, and the per-token loss mask of multi-turn chats.

    configure_chat_template(tokenizer, cfg.model)  # model.chat_template / chat_template_kwargs, set once
    chat_text(tokenizer, turns, tools=..., generation_prompt=True)  # the text the model reads
    prompt_ids(tokenizer, turns)                   # its token ids, ending where the assistant's reply starts
    check_tool_rendering(tokenizer, rows)          # tool-call rows on a template that drops tools: refused
    check_renders_tools(tokenizer)                 # the same probe for serve and chat
    rows = assistant_token_rows(rows, tokenizer, TrainOn.all_assistant)  # {input_ids, assistant_masks}

Assistant tokens are found by rendering: the text of turns [0, k) with the generation prompt ends where reply k
starts, the text of turns [0, k] ends where it stops, and the tokenizer's character offsets map both onto the
tokens of the whole chat. So any template works that renders a conversation's beginning as the beginning of the
whole (the ChatML family, Llama, Mistral...); no `{% generation %}` markers are needed, and a template that
rewrites earlier turns (Qwen3 dropping past reasoning) is refused with the fix.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.config.chat_templates import chat_template_path
from pipeline.config.enums import TrainOn
from pipeline.config.schema import ModelConfig
from pipeline.config.user_errors import UserError

_PROBE_TOOL = "probe_tool_schema"
_PROBE_CALL = "probe_tool_call"
_TOOLS_FIX = ("set model.chat_template=qwen2.5 (shipped: Qwen2.5-style tool calling) or to a .jinja template that "
              "renders `tools` and each message's `tool_calls` (the Qwen2.5 / Qwen3 templates do)")


class ChatTemplateError(UserError, ValueError):
    """The chat template cannot render what the data holds; the message says why and the fix."""


def configure_chat_template(tokenizer: Any, model: ModelConfig) -> None:
    """model.chat_template replaces the tokenizer's template; chat_template_kwargs are baked in as `{% set %}`
    lines, so every later render (TRL, held-out generation, chat, the exported tokenizer) sees the same values."""
    text = tokenizer.chat_template
    if model.chat_template:
        text = chat_template_path(model.chat_template).read_text(encoding="utf-8")
    if model.chat_template_kwargs:
        if not text:
            raise ChatTemplateError("model.chat_template_kwargs is set but the tokenizer has no chat template. Fix: "
                                    "set model.chat_template too.")
        text = "".join(f"{{%- set {k} = {_literal(v)} %}}" for k, v in model.chat_template_kwargs.items()) + text
    tokenizer.chat_template = text


class NoChatTemplateError(UserError, ValueError):
    """The tokenizer carries no chat template, so turns cannot be formatted."""


def require_chat_template(tokenizer: Any, where: object) -> None:
    if tokenizer.chat_template is None:
        raise NoChatTemplateError(f"{where}: the tokenizer has no chat template, so turns cannot be formatted. "
                                  "Fix: use a chat (instruct) model, or send raw text to /v1/completions.")


def chat_text(tokenizer: Any, turns: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
              generation_prompt: bool = False) -> str:
    """The conversation as the model reads it, through the tokenizer's chat template (tool schemas included);
    with `generation_prompt` it ends with the opening of the assistant's turn."""
    return tokenizer.apply_chat_template(list(turns), tools=tools, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def chat_ids(tokenizer: Any, turns: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
             generation_prompt: bool = False) -> list[int]:
    """Token ids of `chat_text`."""
    # Tokenized without special tokens: the template already writes them, and a tokenizer that adds BOS would
    # double it.
    text = chat_text(tokenizer, turns, tools=tools, generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer: Any, turns: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids of the conversation followed by the assistant's turn opening: what generation starts from."""
    return chat_ids(tokenizer, turns, tools=tools, generation_prompt=True)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return json.dumps(value, ensure_ascii=False)


def has_tools(rows: Any) -> bool:
    if "tools" in rows.column_names and any(t for t in rows["tools"]):
        return True
    if "tool_calls" not in str(rows.features):  # the Arrow schema says no turn anywhere has tool calls
        return False
    return any(m.get("tool_calls") or m["role"] == "tool" for row in rows for m in _chat(row))


def check_tool_rendering(tokenizer: Any, rows: Any) -> None:
    """Rows with tools or tool calls need a template that writes both; one that drops them is refused."""
    if has_tools(rows):
        check_renders_tools(tokenizer, "the training rows hold tool calls", " (the model would learn empty replies)")


def check_renders_tools(tokenizer: Any, why: str = "tools are given", consequence: str = "") -> None:
    """The template writes tool schemas and assistant tool calls (probed by rendering both); ChatTemplateError
    saying `why` they are needed and the fix, if not. Training rows, serve and chat ask the same question."""
    schema = {"type": "function", "function": {"name": _PROBE_TOOL, "description": "probe",
                                               "parameters": {"type": "object", "properties": {}}}}
    call = {"type": "function", "function": {"name": _PROBE_CALL, "arguments": "{}"}}
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]
    try:
        text = chat_text(tokenizer, chat, tools=[schema])
    except Exception as e:  # a template raising on a tool turn: the same refusal
        raise ChatTemplateError(f"the chat template fails on tool turns ({e}). Fix: {_TOOLS_FIX}.") from None
    dropped = [what for what, name in (("the tool schemas", _PROBE_TOOL), ("the tool calls", _PROBE_CALL))
               if name not in text]
    if dropped:
        raise ChatTemplateError(f"{why}, but the chat template drops {' and '.join(dropped)}{consequence}. "
                                f"Fix: {_TOOLS_FIX}.")


def is_multi_turn(rows: Any) -> bool:
    """Some row's prompt holds an earlier assistant turn (only then do the two train_on modes differ), or its
    completion holds more than the reply: tool turns between assistant replies (tool-use demonstrations), which
    TRL's prompt-completion path would train on with the replies."""
    def multi(row: dict[str, Any]) -> bool:
        prompt, completion = row["prompt"], row.get("completion")
        earlier = isinstance(prompt, list) and any(m["role"] == "assistant" for m in prompt)
        return earlier or isinstance(completion, list) and any(m["role"] != "assistant" for m in completion)

    return "prompt" in rows.column_names and any(multi(row) for row in rows)


def assistant_token_rows(rows: Any, tokenizer: Any, train_on: TrainOn) -> Any:
    """Conversational prompt/completion rows as token ids with `assistant_masks`: 1 on the tokens of every
    assistant reply (all_assistant) or the final one (last_assistant), 0 on system, user and tool tokens."""
    import datasets

    out = [_masked(row, tokenizer, train_on, i) for i, row in enumerate(rows, 1)]
    return datasets.Dataset.from_list(out)


def _masked(row: dict[str, Any], tokenizer: Any, train_on: TrainOn, number: int) -> dict[str, Any]:
    chat = _chat(row)
    tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else row.get("tools")
    full = chat_text(tokenizer, chat, tools=tools)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    replies = [k for k, m in enumerate(chat) if m["role"] == "assistant"]
    if TrainOn(train_on) == TrainOn.last_assistant:
        replies = replies[-1:]
    spans = []
    for k in replies:
        start = chat_text(tokenizer, chat[:k], tools=tools, generation_prompt=True)
        end = chat_text(tokenizer, chat[: k + 1], tools=tools)
        if not (full.startswith(start) and full.startswith(end) and len(start) <= len(end)):
            raise ChatTemplateError(
                f"training row {number}: the chat template renders the conversation up to reply {k + 1} differently "
                "from the same turns inside the whole chat, so the reply's tokens cannot be located. Fix: set "
                "data.train_on=last_assistant, or a template that keeps earlier turns as they are (e.g. "
                "model.chat_template_kwargs='{enable_thinking: false}' for Qwen3, or model.chat_template=chatml).")
        # the template's line break after the end-of-turn token is not part of the reply
        spans.append((len(start), len(end.rstrip("\n"))))
    mask = [int(any(a <= s and e <= b and s < e for a, b in spans)) for s, e in encoded["offset_mapping"]]
    return {"input_ids": encoded["input_ids"], "assistant_masks": mask}


def _chat(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's turns, without the None keys Arrow adds where other rows have them (tool_calls)."""
    if not isinstance(row.get("messages", row.get("prompt")), list):
        return []  # plain-text rows
    turns = list(row.get("messages") or [*(row.get("prompt") or []), *(row.get("completion") or [])])
    return [{k: v for k, v in m.items() if v is not None or k == "content"} for m in turns]
