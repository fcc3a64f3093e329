"""Reading one input row: required fields, text, chat turns, the prompt built from data.* settings.

Shared by the converters of pipeline/data/formats.py and pipeline/data/seed_formats.py; every helper raises
`BadRow` naming the field and the fix (the caller adds where the row is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.data.errors import BadRow, DataError

if TYPE_CHECKING:
    from pipeline.config.data_schema import DataConfig

Message = dict[str, str]
ROLES = ("system", "user", "assistant")
_MESSAGES_FIX = "use a list of {role: system|user|assistant, content: string}"


def _from_messages(row: dict[str, Any], data: DataConfig) -> dict[str, Any]:
    messages = _messages(_value(row, "messages"), "messages")
    last = messages[-1]
    if last["role"] != "assistant":
        raise BadRow(
            "last turn not assistant in field 'messages'",
            "messages",
            f"the last turn is '{last['role']}', not 'assistant'",
            "end every conversation with the assistant reply to train on",
        )
    if len(messages) < 2:
        raise BadRow(
            "no prompt turn in field 'messages'",
            "messages",
            "there is no turn before the reply",
            "put at least one user turn before the assistant reply",
        )
    _require_text(last["content"], "messages", "the final assistant content")
    return {"prompt": _with_system(messages[:-1], data), "completion": [last]}


def _prompt(row: dict[str, Any], data: DataConfig) -> list[Message]:
    value = _value(row, "prompt")
    if isinstance(value, list):  # already a conversation: used as is
        return _with_system(_messages(value, "prompt"), data)
    return _user_prompt(_text(row, "prompt"), row, data)


def _alpaca_prompt(row: dict[str, Any], data: DataConfig) -> list[Message]:
    text = _text(row, "instruction")
    extra = row.get("input")
    if isinstance(extra, str) and extra.strip():
        text = f"{text}\n\n{extra}"
    return _user_prompt(text, row, data)


def _user_prompt(text: str, row: dict[str, Any], data: DataConfig) -> list[Message]:
    content = _templated(text, row, data)
    # One-shot/few-shot example turns sit between the system prompt and the question.
    shots = [{"role": m["role"], "content": m["content"]} for m in data.few_shot]
    return _with_system([*shots, {"role": "user", "content": content}], data)


def _templated(text: str, row: dict[str, Any], data: DataConfig) -> str:
    """The user turn's text through data.prompt_template."""
    try:
        return data.prompt_template.format(**{**row, "prompt": text})
    except KeyError as e:
        key = e.args[0]
        problem = f"data.prompt_template uses {{{key}}} but the row has no '{key}'"
        fix = f"add '{key}' to every row or remove it from data.prompt_template"
        raise BadRow(f"missing field '{key}'", key, problem, fix) from None
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        # A broken template fails on every row: a config error, fatal even under on_bad_row=skip.
        problem = f"invalid format string {data.prompt_template!r} ({e})"
        fix = "use named fields only, e.g. '{prompt} Be brief.'; write {{ and }} for literal braces"
        raise DataError("data.prompt_template", problem, fix, "prompt_template") from None


def _with_system(messages: list[Message], data: DataConfig) -> list[Message]:
    # A row's own system turn wins over the configured one; None leaves the chat template's default.
    if data.system_prompt is None or any(m["role"] == "system" for m in messages):
        return messages
    return [{"role": "system", "content": data.system_prompt}, *messages]


def _value(row: dict[str, Any], field: str) -> Any:
    value = row.get(field)
    if value is None:  # absent, or null in JSON / the hub
        fix = f"give every row a '{field}' (or map a column to it with data.columns)"
        raise BadRow(f"missing field '{field}'", field, "the field is missing", fix)
    return value


def _text(row: dict[str, Any], field: str) -> str:
    """A required non-blank string; numbers are accepted and cast (JSON answers are often ints)."""
    value = _value(row, field)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _require_text(value, field, "the value")


def _label(row: dict[str, Any], field: str = "label") -> bool:
    """KTO's desirable flag: a JSON bool, or the strings/numbers people write for one."""
    value = _value(row, field)
    if isinstance(value, bool):
        return value
    spelled = str(value).strip().lower()
    if spelled in ("true", "1", "yes", "desirable"):
        return True
    if spelled in ("false", "0", "no", "undesirable"):
        return False
    problem = f"the value {value!r} is not a desirable/undesirable flag"
    raise _wrong_type(field, problem, "use true (desirable) or false (undesirable)")


def _require_text(value: Any, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(field, f"{what} is a {type(value).__name__}, not a string", "make it a string")
    if not value.strip():
        raise BadRow(f"empty field '{field}'", field, f"{what} is empty", "fill it in or drop the row")
    return value


def _assistant(row: dict[str, Any], field: str) -> list[Message]:
    """A reply: a string, or a conversation holding exactly one assistant message."""
    value = _value(row, field)
    if not isinstance(value, list):
        return [{"role": "assistant", "content": _text(row, field)}]
    messages = _messages(value, field)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        problem = "a list reply must be exactly one assistant message"
        raise _wrong_type(field, problem, "use a string or [{role: assistant, content: ...}]")
    _require_text(messages[0]["content"], field, "the assistant content")
    return messages


def _messages(value: Any, field: str) -> list[Message]:
    """A validated conversation, reduced to role/content (hub rows may carry extra keys)."""
    if not isinstance(value, list):
        raise _wrong_type(field, f"expected a list of messages, got a {type(value).__name__}", _MESSAGES_FIX)
    if not value:
        raise BadRow(f"empty field '{field}'", field, "the conversation is empty", _MESSAGES_FIX)
    out = []
    for i, message in enumerate(value, 1):
        if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
            raise _wrong_type(field, f"message {i} has no role/content", _MESSAGES_FIX)
        role, content = message["role"], message["content"]
        if role not in ROLES:
            problem = f"message {i} has unknown role {role!r}"
            raise BadRow(f"unknown role in field '{field}'", field, problem, _MESSAGES_FIX)
        if not isinstance(content, str):
            raise _wrong_type(
                field, f"message {i} content is a {type(content).__name__}, not a string", _MESSAGES_FIX
            )
        out.append({"role": role, "content": content})
    return out


def _wrong_type(field: str, problem: str, fix: str) -> BadRow:
    return BadRow(f"wrong type in field '{field}'", field, problem, fix)
