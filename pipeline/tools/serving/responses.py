"""Response bodies in the OpenAI API's shapes: whole answers, streamed chunks (server-sent events) and errors."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.tools.serving.decode import Done


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def usage(done: Done) -> dict[str, int]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


@dataclass(frozen=True)
class Shape:
    """One answer's identity and its chat or text-completion form."""

    model: str
    chat: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}")
        object.__setattr__(self, "created", int(time.time()))

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, done: Done) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason, "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        body = self._head("chat.completion" if self.chat else "text_completion")
        return {**body, "choices": [choice], "usage": usage(done)}

    def chunk(self, text: str | None = None, finish_reason: str | None = None, first: bool = False,
              done: Done | None = None) -> dict[str, Any]:
        """A streamed piece: text, or the closing finish_reason, or (done given) the usage-only last chunk."""
        body = self._head("chat.completion.chunk" if self.chat else "text_completion")
        if done is not None:
            return {**body, "choices": [], "usage": usage(done)}
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            choice["delta"] = {**delta, "content": text} if text is not None else delta
        else:
            choice["text"] = text or ""
        return {**body, "choices": [choice]}
