"""One row of a LLaMA-Factory registry entry into our stage rows (TRL's conversational formats).

    alpaca    {prompt: instruction, query: input, response: output, history: [[q, a], ...], system,
               chosen/rejected: strings, kto_tag: bool}
    sharegpt  {messages: [{<role_tag>: <user_tag|assistant_tag|observation_tag|function_tag|system_tag>,
               <content_tag>: text}, ...], system, tools: JSON text, chosen/rejected: one turn object each}

Tool calls become TRL's conversational tool format: a function_call turn is an assistant message with
`tool_calls` ([{type: function, function: {name, arguments}}]; arguments kept as JSON text, so rows of different
tools share one Arrow schema), an observation turn is a `tool` message, and the tools column is JSON text that
TRL's SFT tokenization loads and hands to the chat template.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pipeline.data.rows as f
from pipeline.config.stage_table import RowShape
from pipeline.data.errors import BadRow
from pipeline.data.registry import Entry

if TYPE_CHECKING:
    from pipeline.config.data_schema import DataConfig

Message = dict[str, Any]
Converter = Callable[[dict[str, Any]], dict[str, Any]]


def entry_converter(entry: Entry, view: RowShape, data: DataConfig) -> Converter:
    """row -> the `view` row of this entry; raises BadRow naming the entry's column."""
    read = _alpaca if entry.formatting == "alpaca" else _sharegpt
    return lambda row: _shape(*read(row, entry, view, data), row, entry, view)


def _shape(prompt: list[Message], reply: list[Message] | None, tools: str | None, row: dict[str, Any],
           entry: Entry, view: RowShape) -> dict[str, Any]:
    extra = {"tools": tools} if tools else {}
    if view == RowShape.preference:
        return {"prompt": prompt, "chosen": _choice(row, entry, "chosen"), "rejected": _choice(row, entry, "rejected"),
                **extra}
    if view == RowShape.answer:
        return {"prompt": prompt, "answer": f._text(row, entry.columns["answer"])}
    if reply is None:
        raise _missing(entry, "response" if entry.formatting == "alpaca" else "messages", "the reply")
    if view == RowShape.labeled:
        return {"prompt": prompt, "completion": reply, "label": f._label(row, entry.columns["kto_tag"]), **extra}
    return {"prompt": prompt, "completion": reply, **extra}


# ---- alpaca ---------------------------------------------------------------------------------------------------


def _alpaca(row: dict[str, Any], entry: Entry, view: RowShape, data: DataConfig) -> tuple[Any, Any, None]:
    cols = entry.columns
    text = f._text(row, cols["prompt"])
    query = row.get(cols.get("query", ""))
    if isinstance(query, str) and query.strip():
        text = f"{text}\n{query}"  # LLaMA-Factory joins instruction and input with one newline
    turns = [*_history(row, cols.get("history")), {"role": "user", "content": f._templated(text, row, data)}]
    prompt = _system(row, entry, turns, data)
    response = cols.get("response")
    reply = None
    if view in (RowShape.completion, RowShape.labeled) and row.get(response) is not None:
        reply = [{"role": "assistant", "content": f._text(row, response)}]
    return prompt, reply, None


def _history(row: dict[str, Any], column: str | None) -> list[Message]:
    value = row.get(column) if column else None
    if not value:
        return []
    fix = "write history as [[instruction, response], ...] (strings)"
    if not isinstance(value, list):
        problem = f"expected a list of [instruction, response] pairs, got {type(value).__name__}"
        raise f._wrong_type(column, problem, fix)
    turns = []
    for i, pair in enumerate(value, 1):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise f._wrong_type(column, f"history item {i} is not an [instruction, response] pair of strings", fix)
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return turns


def _system(row: dict[str, Any], entry: Entry, turns: list[Message], data: DataConfig) -> list[Message]:
    """The row's system column wins over data.system_prompt (which fills in when the row has none)."""
    column = entry.columns.get("system")
    system = row.get(column) if column else None
    if isinstance(system, str) and system.strip():
        return [{"role": "system", "content": system}, *turns]
    return f._with_system(turns, data)


def _choice(row: dict[str, Any], entry: Entry, key: str) -> list[Message]:
    column = entry.columns.get(key, key)
    value = f._value(row, column)
    if entry.formatting == "alpaca" or isinstance(value, str):
        return [{"role": "assistant", "content": f._text(row, column)}]
    if not isinstance(value, dict):
        raise f._wrong_type(column, f"expected one turn object, got a {type(value).__name__}",
                            f"write {key} as {{{entry.tags['role_tag']}: {entry.tags['assistant_tag']}, "
                            f"{entry.tags['content_tag']}: text}}")
    turn = _turn(value, 1, column, entry)
    if turn["role"] != "assistant":
        raise BadRow(f"{key} turn not from the assistant", column, f"the {key} turn is a {turn['role']} turn",
                     f"give {key} the role {entry.tags['assistant_tag']} (or {entry.tags['function_tag']})")
    return [turn]


# ---- sharegpt -------------------------------------------------------------------------------------------------


def _sharegpt(row: dict[str, Any], entry: Entry, view: RowShape, data: DataConfig) -> tuple[Any, Any, str | None]:
    column = entry.columns["messages"]
    value = f._value(row, column)
    if not isinstance(value, list) or not value:
        raise f._wrong_type(column, "expected a non-empty list of turns", _turns_fix(entry))
    turns = [_turn(t, i, column, entry) for i, t in enumerate(value, 1)]
    system = [turns.pop(0)] if turns[0]["role"] == "system" else []
    _check_order(turns, column, entry)
    # A trailing assistant turn is the reply; preference rows end on the user (their replies are chosen/rejected).
    reply = None
    if view in (RowShape.completion, RowShape.labeled):
        if turns[-1]["role"] != "assistant":
            raise BadRow(f"last turn not assistant in field '{column}'", column,
                         f"the last turn is '{turns[-1]['role']}', not a reply ({entry.tags['assistant_tag']})",
                         "end every conversation with the assistant reply to train on")
        reply = [turns.pop()]
    elif turns[-1]["role"] == "assistant":
        turns.pop()  # GRPO/preference prompts end where the model's turn begins
    if not turns:
        raise BadRow(f"no prompt turn in field '{column}'", column, "there is no turn before the reply",
                     "put at least one user turn before the assistant reply")
    if turns[-1]["role"] == "user":
        turns[-1] = {**turns[-1], "content": f._templated(turns[-1]["content"], row, data)}
    prompt = system + turns if system else _system(row, entry, turns, data)
    return prompt, reply, _tools(row, entry)


def _turn(turn: Any, i: int, column: str, entry: Entry) -> Message:
    tags = entry.tags
    if not isinstance(turn, dict) or tags["role_tag"] not in turn or tags["content_tag"] not in turn:
        raise f._wrong_type(column, f"turn {i} has no {tags['role_tag']}/{tags['content_tag']}", _turns_fix(entry))
    speaker, content = turn[tags["role_tag"]], turn[tags["content_tag"]]
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["observation_tag"]: "tool",
             tags["function_tag"]: "function", tags["system_tag"]: "system"}
    if speaker not in roles:
        raise BadRow(f"unknown role in field '{column}'", column, f"turn {i} has {tags['role_tag']} {speaker!r}",
                     f"use one of {list(roles)} (or set the entry's tags)")
    if not isinstance(content, str):
        raise f._wrong_type(column, f"turn {i} {tags['content_tag']} is a {type(content).__name__}, not a string",
                            _turns_fix(entry))
    role = roles[speaker]
    if role == "function":
        return {"role": "assistant", "content": "", "tool_calls": _tool_calls(content, i, column)}
    return {"role": role, "content": content}


def _tool_calls(content: str, i: int, column: str) -> list[dict[str, Any]]:
    fix = 'write the function_call value as JSON: {"name": ..., "arguments": {...}} (or a list of them)'
    try:
        calls = json.loads(content)
    except json.JSONDecodeError:
        raise f._wrong_type(column, f"turn {i}'s function call is not JSON", fix) from None
    calls = calls if isinstance(calls, list) else [calls]
    out = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or "arguments" not in call:
            raise f._wrong_type(column, f"turn {i}'s function call has no name/arguments", fix)
        args = call["arguments"]
        text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        out.append({"type": "function", "function": {"name": call["name"], "arguments": text}})
    return out


def _check_order(turns: list[Message], column: str, entry: Entry) -> None:
    """LLaMA-Factory's rule: user/observation turns at odd positions, assistant/function turns at even ones."""
    for i, turn in enumerate(turns, 1):
        asker = turn["role"] in ("user", "tool")
        if asker != (i % 2 == 1):
            t = entry.tags
            raise BadRow(f"turns out of order in field '{column}'", column,
                         f"turn {i} ({turn['role']}) breaks the alternation",
                         f"alternate {t['user_tag']}/{t['observation_tag']} turns with {t['assistant_tag']}/"
                         f"{t['function_tag']} turns, starting with {t['user_tag']} (after an optional system turn)")


def _tools(row: dict[str, Any], entry: Entry) -> str | None:
    """The row's tool schemas as JSON text of [{type: function, function: {...}}], or None."""
    column = entry.columns.get("tools")
    value = row.get(column) if column else None
    if value in (None, "", []):
        return None
    fix = 'write tools as JSON text of a list: [{"name": ..., "description": ..., "parameters": {...}}]'
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise f._wrong_type(column, "the tools value is not JSON", fix) from None
    value = value if isinstance(value, list) else [value]
    if not all(isinstance(t, dict) and (t.get("name") or t.get("function")) for t in value):
        raise f._wrong_type(column, "a tool has no name", fix)
    tools = [t if t.get("type") == "function" and "function" in t else {"type": "function", "function": t}
             for t in value]
    return json.dumps(tools, ensure_ascii=False)


def _turns_fix(entry: Entry) -> str:
    t = entry.tags
    return f"use a list of {{{t['role_tag']}: {t['user_tag']}|{t['assistant_tag']}|..., {t['content_tag']}: text}}"


def _missing(entry: Entry, key: str, what: str) -> BadRow:
    column = entry.columns.get(key, key)
    return BadRow(f"missing field '{column}'", column, f"{what} column '{column}' is missing",
                  f"give every row a '{column}' or map columns.{key} in the entry")
