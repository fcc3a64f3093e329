"""Response bodies in the OpenAI API's shapes: whole answers with one or more choices, streamed chunks (server-sent
events), errors, and log-probs in both of OpenAI's forms: chat's list of {token, logprob, bytes, top_logprobs} and
the legacy completions' parallel lists (tokens, token_logprobs, top_logprobs, text_offset)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipeline.tools.serving.decode import Done, TokenLogprob


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


@dataclass
class Choice:
    """One choice's answer as its events arrive."""

    index: int
    # the prompt's text, put before the answer (echo=true on /v1/completions), else ""
    echo: str = ""
    parts: list[str] = field(default_factory=list)
    tokens: list[TokenLogprob] = field(default_factory=list)
    done: Done | None = None


class TokenNames:
    """Each token's text and bytes as clients are shown them, cached: a token is looked up once per server."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._texts: dict[int, str] = {}
        # Byte-level BPE (GPT-2, SmolLM2, Qwen) spells each byte as one printable character; undone here, a token
        # that holds half of a UTF-8 character still gets its true bytes (its text shows U+FFFD).
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_of = _unicode_to_byte() if type(decoder).__name__ == "ByteLevel" else None

    def text(self, token: int) -> str:
        if token not in self._texts:
            self._texts[token] = self.tokenizer.decode([token])
        return self._texts[token]

    def bytes(self, token: int) -> list[int]:
        piece = self.tokenizer.convert_ids_to_tokens(token) if self._byte_of else None
        if piece and all(c in self._byte_of for c in piece):
            return [self._byte_of[c] for c in piece]
        return list(self.text(token).encode())

    def chat(self, tokens: list[TokenLogprob]) -> dict[str, Any]:
        def one(token: int, logprob: float) -> dict[str, Any]:
            return {"token": self.text(token), "logprob": logprob, "bytes": self.bytes(token)}

        return {"content": [{**one(t.id, t.logprob), "top_logprobs": [one(i, lp) for i, lp in t.top]}
                            for t in tokens], "refusal": None}

    def legacy(self, tokens: list[TokenLogprob], offset: int) -> tuple[dict[str, Any], int]:
        """The legacy lists, text offsets counted from `offset`; returns them and the offset after the last one.
        As OpenAI documents, a token's alternatives include the chosen token, so there may be k + 1 of them."""
        body: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for t in tokens:
            text = self.text(t.id)
            body["tokens"].append(text)
            body["token_logprobs"].append(t.logprob)
            body["top_logprobs"].append(None if t.logprob is None else
                                        {**{self.text(i): lp for i, lp in t.top}, text: t.logprob})
            body["text_offset"].append(offset)
            offset += len(text)
        return body, offset


def _unicode_to_byte() -> dict[str, int]:
    # GPT-2's table: printable bytes stand for themselves, the others are shifted past U+0100.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {chr(b): b for b in printable}, 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def usage(choices: list[Choice], n: int) -> dict[str, int]:
    # A prompt counts once however many choices it has (OpenAI's rule); every choice's tokens count.
    prompt = sum(c.done.prompt_tokens for c in choices if c.index % n == 0)
    completion = sum(c.done.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass(frozen=True)
class Shape:
    """One answer's identity and its chat or text-completion form; `logprobs` None: not asked for."""

    model: str
    chat: bool
    names: TokenNames | None = None
    logprobs: int | None = None
    n: int = 1
    # a ToolReplies (serving/tool_calls.py) when tools were offered: it reads tool calls out of each answer
    replies: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}")
        object.__setattr__(self, "created", int(time.time()))

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _logprobs(self, tokens: list[TokenLogprob], offset: int = 0) -> dict[str, Any] | None:
        if self.logprobs is None or self.names is None:
            return None
        return self.names.chat(tokens) if self.chat else self.names.legacy(tokens, offset)[0]

    def whole(self, choices: list[Choice]) -> dict[str, Any]:
        body = self._head("chat.completion" if self.chat else "text_completion")
        out = []
        for c in choices:
            text = c.echo + "".join(c.parts)
            choice: dict[str, Any] = {"index": c.index, "finish_reason": c.done.finish_reason,
                                      "logprobs": self._logprobs(c.tokens)}
            if self.chat:
                choice["message"] = self.replies.message(text) if self.replies else {"role": "assistant",
                                                                                     "content": text}
                # a call cut short by max_tokens does not parse, so "length" stays "length"
                if choice["message"].get("tool_calls") and c.done.finish_reason == "stop":
                    choice["finish_reason"] = "tool_calls"
            else:
                choice["text"] = text
            out.append(choice)
        return {**body, "choices": out, "usage": usage(choices, self.n)}

    def chunk(self, index: int = 0, text: str | None = None, finish_reason: str | None = None, first: bool = False,
              tokens: list[TokenLogprob] | tuple[TokenLogprob, ...] = (), offset: int = 0) -> dict[str, Any]:
        """A streamed piece of one choice: text (with its tokens' log-probs), or the closing finish_reason."""
        body = self._head("chat.completion.chunk" if self.chat else "text_completion")
        choice: dict[str, Any] = {"index": index, "finish_reason": finish_reason,
                                  "logprobs": self._logprobs(list(tokens), offset) if tokens else None}
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            choice["delta"] = {**delta, "content": text} if text is not None else delta
        else:
            choice["text"] = text or ""
        return {**body, "choices": [choice]}

    def tool_chunk(self, index: int, call: dict[str, Any]) -> dict[str, Any]:
        """A streamed piece of one tool call: OpenAI's delta.tool_calls (serving/tool_stream.py)."""
        choice = {"index": index, "finish_reason": None, "logprobs": None, "delta": {"tool_calls": [call]}}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self, choices: list[Choice]) -> dict[str, Any]:
        body = self._head("chat.completion.chunk" if self.chat else "text_completion")
        return {**body, "choices": [], "usage": usage(choices, self.n)}
