"""Request bodies of the OpenAI API as far as this server implements it, checked strictly: a wrong type is a 400
naming the field, never a silent coercion ("0.5" is not a temperature). Fields that OpenAI clients send but this
server does not use (user, logprobs, presence_penalty, ...) are accepted and ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOPS = 4  # as OpenAI


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class StreamOptions(_Body):
    include_usage: bool = False


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        # OpenAI clients may send content as [{"type": "text", "text": ...}, ...]; only text parts are served.
        if isinstance(value, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in value):
                raise ValueError("content must be a string or a list of {'type': 'text', 'text': ...} parts")
            return "".join(p["text"] for p in value)
        return value

    def as_turn(self) -> dict[str, str]:
        # Chat templates know system, user and assistant; OpenAI's newer "developer" role is the system prompt.
        return {"role": "system" if self.role == "developer" else self.role, "content": self.content}


class _Generation(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    # 0 (or absent) is greedy decoding; above 0 samples at that temperature
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list) and (len(value) > MAX_STOPS or any(s == "" for s in value)):
            raise ValueError(f"give at most {MAX_STOPS} non-empty stop strings")
        return value

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported; send several requests (they are batched together)")
        return value


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    # the newer name of max_tokens in OpenAI's chat API
    max_completion_tokens: int | None = Field(None, ge=1)

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Generation):
    prompt: str = Field(min_length=1)

    def token_budget(self) -> int | None:
        return self.max_tokens
