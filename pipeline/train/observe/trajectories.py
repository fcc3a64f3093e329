"""A tool run's completion as people read it: every turn in order, tool calls and tool results marked as such.

TRL's multi-turn loop keeps a completion as the messages it produced: assistant turns (with `tool_calls` where the
reply parsed as a call), then `role: tool` results, then the next assistant turn. The completions table shows them
all, not just the last turn, and counts turns and calls per episode (`trajectory/*` scalars).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

TOOL_RESULT = "[tool result"


def is_trajectory(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def _call_text(call: dict[str, Any]) -> str:
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    shown = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f"-> call {function.get('name', '?')}({shown})"


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # multimodal blocks: their text parts
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def trajectory_text(messages: Sequence[dict[str, Any]]) -> str:
    """One line per turn: the assistant's text and its calls, each tool result labelled with the tool's name."""
    lines = []
    for message in messages:
        role = message.get("role", "assistant")
        if role == "tool":
            lines.append(f"{TOOL_RESULT}: {message.get('name', '?')}] {_content(message)}")
            continue
        text = _content(message)
        if text:
            lines.append(text if role == "assistant" else f"{role}: {text}")
        lines += [_call_text(call) for call in message.get("tool_calls") or []]
    return "\n".join(lines)


def turns(messages: Sequence[dict[str, Any]]) -> int:
    """Assistant turns in one episode."""
    return sum(1 for m in messages if m.get("role", "assistant") == "assistant")


def tool_calls(messages: Sequence[dict[str, Any]]) -> int:
    return sum(len(m.get("tool_calls") or []) for m in messages if m.get("role", "assistant") == "assistant")


def episode_counts(completions: Sequence[Any]) -> dict[str, float]:
    """Means over a generation batch's episodes; {} when its completions are not multi-turn messages."""
    episodes = [c for c in completions if is_trajectory(c)]
    if not episodes:
        return {}
    n = len(episodes)
    return {"trajectory/turns_mean": sum(map(turns, episodes)) / n,
            "trajectory/tool_calls_mean": sum(map(tool_calls, episodes)) / n,
            "trajectory/turns_max": float(max(map(turns, episodes)))}
