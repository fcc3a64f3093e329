"""A streamed chat answer when tools were offered: OpenAI's shape, content deltas, then tool_call deltas.

The text streams as content until a tool call may be starting (the template's call opening, or the first characters
of it at the end of what came so far); from there it is held, since a call is parsed from its whole text by the
response template training parsed rollouts with (serving/tool_calls.py). At the end the held text is parsed: its
calls go out as OpenAI's `delta.tool_calls` (per call: its index, id, type and name with empty arguments, then the
arguments JSON) and finish_reason `tool_calls`; text whose call does not parse (malformed, or cut by max_tokens)
goes out as plain content, exactly what the whole answer would have said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.tools.serving.decode import TokenLogprob

# how the templates we ship open a call (pipeline/envs/templates.py checks a template writes calls this way)
CALL_OPENING = "<tool_call>"


@dataclass
class ToolStream:
    """One choice's streamed text; `replies` is the request's ToolReplies (it parses the whole answer)."""

    replies: Any
    text: str = ""
    # characters of `text` already sent as content
    sent: int = 0
    calling: bool = False
    # log-probs of text not sent yet: they go out with the text they belong to
    held: list[TokenLogprob] = field(default_factory=list)

    def feed(self, text: str, tokens: tuple[TokenLogprob, ...] = ()) -> tuple[str, list[TokenLogprob]]:
        """The content to send now for a new piece of generated text (may be empty), with its log-probs."""
        self.text += text
        self.held.extend(tokens)
        if self.calling:
            return "", []
        at = self.text.find(CALL_OPENING, self.sent)
        if at >= 0:
            self.calling = True
            end = at
        else:
            end = len(self.text) - _opening_prefix(self.text[self.sent:])
        out, self.sent = self.text[self.sent:end], max(end, self.sent)
        if not out:
            return "", []
        tokens_out, self.held = self.held, []
        return out, tokens_out

    def finish(self, finish_reason: str) -> tuple[str, list[TokenLogprob], list[dict[str, Any]], str]:
        """(content still to send, its log-probs, the tool-call deltas, the finish reason) at the end of the answer."""
        message = self.replies.message(self.text)
        calls = message.get("tool_calls") or []
        if not calls:  # no call after all: the held text is content
            rest, self.sent = self.text[self.sent:], len(self.text)
            tokens, self.held = self.held, []
            return rest, tokens, [], finish_reason
        deltas = []
        for i, call in enumerate(calls):
            function = call["function"]
            deltas.append({"index": i, "id": call["id"], "type": "function",
                           "function": {"name": function["name"], "arguments": ""}})
            deltas.append({"index": i, "function": {"arguments": function["arguments"]}})
        # a call cut short by max_tokens does not parse, so "length" stays "length"
        return "", [], deltas, "tool_calls" if finish_reason == "stop" else finish_reason


def _opening_prefix(text: str) -> int:
    """Length of the longest end of `text` that begins a call opening (held back: the next piece may complete it)."""
    for k in range(min(len(CALL_OPENING) - 1, len(text)), 0, -1):
        if CALL_OPENING.startswith(text[-k:]):
            return k
    return 0
