"""Request bodies of the OpenAI API as far as this server implements it, checked strictly: a wrong type is a 400
naming the field, never a silent coercion ("0.5" is not a temperature). A field this server cannot honour is a 400
saying so when it asks for something (response_format json_object, a non-zero presence_penalty, a forced
tool_choice, ...); fields that change nothing in the answer (user, metadata, store, ...) are accepted. Tools and
tool calls are OpenAI's shapes here; serving/tool_calls.py turns them into the chat template's."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOPS = 4  # as OpenAI
MAX_N = 16
# OpenAI's legacy completions allow 5; vLLM, which evaluation harnesses also target, 20
MAX_LOGPROBS = 20
# fields OpenAI defines that would change the answer; each value listed here asks for nothing and is accepted
UNSUPPORTED = {"presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "logit_bias": ({},),
               "functions": ([],), "function_call": ("none", "auto"), "suffix": ("",)}
# what tool_choice may ask: no constrained decoding here, so a call cannot be forced ("required", a named function)
TOOL_CHOICES = ("auto", "none")


class FieldError(ValueError):
    """A request whose fields disagree with each other or ask for what is not served: a 400 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class StreamOptions(_Body):
    include_usage: bool = False


class FunctionCall(_Body):
    name: str = Field(min_length=1)
    # a JSON object, as a string (OpenAI's form)
    arguments: str

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON ({err})") from None
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object, e.g. '{\"expression\": \"2 + 3\"}'")
        return value


class ToolCall(_Body):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(_Body):
    name: str = Field(min_length=1)
    description: str | None = None
    # JSON Schema of the arguments
    parameters: dict[str, Any] | None = None
    # OpenAI's structured-output promise; without constrained decoding nothing changes, so it is accepted as a hint
    strict: bool | None = None


class ToolSpec(_Body):
    type: Literal["function"]
    function: FunctionSpec


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # None only on an assistant turn that calls tools (what OpenAI sends back)
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    # which call a role=tool message answers
    tool_call_id: str | None = None

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

    @model_validator(mode="after")
    def _fields_of_the_role(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only on an assistant message with tool_calls)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"tool_calls belong on assistant messages, not {self.role!r} ones")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a role=tool message needs tool_call_id: the id of the call it answers")
        return self


class _Generation(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    # 0 (or absent) is greedy decoding; above 0 samples at that temperature
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: list[str] | None = None
    # with temperature > 0: the same seed and request give the same text, alone or batched with others
    seed: int | None = None
    # choices sampled together, in one batch
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list) and (len(value) > MAX_STOPS or any(s == "" for s in value)):
            raise ValueError(f"give at most {MAX_STOPS} non-empty stop strings")
        return value

    @field_validator("response_format")
    @classmethod
    def _plain_text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        kind = (value or {}).get("type", "text")
        if kind != "text":
            raise ValueError(f"type {kind!r} is not supported: this server has no constrained decoding, so it "
                             "cannot promise JSON. Fix: ask for JSON in the prompt and parse the answer, or send "
                             "response_format={'type': 'text'} (or none)")
        return value

    def check(self) -> None:
        """Cross-field rules and unsupported asks, as FieldError (pydantic would name the whole body instead)."""
        for name, value in (self.model_extra or {}).items():
            if name in UNSUPPORTED and value is not None and value not in UNSUPPORTED[name]:
                raise FieldError(name, f"{value!r} is not supported by this server. Fix: leave it out")

    def seeds(self) -> list[int | None]:
        # One generator per choice: choice j draws from seed + j, so n choices differ and choice 0 is the n=1 answer.
        return [None if self.seed is None else self.seed + j for j in range(self.n)]


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    # the newer name of max_tokens in OpenAI's chat API
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    # functions the model may call, rendered into the prompt by the chat template
    tools: list[ToolSpec] | None = None
    # "auto" (or absent): the model decides; "none": tools are not offered this turn
    tool_choice: str | dict[str, Any] | None = None
    # false: at most one call per answer (the first the model wrote)
    parallel_tool_calls: bool | None = None

    def check(self) -> None:
        super().check()
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldError("top_logprobs", "needs logprobs=true. Fix: send logprobs=true with it")
        if self.tool_choice is not None and self.tool_choice not in TOOL_CHOICES:
            raise FieldError("tool_choice", f"{self.tool_choice!r} is not supported: this server has no constrained "
                             "decoding, so it cannot force a tool call. Fix: tool_choice='auto' (the model decides; "
                             "ask for the call in the prompt) or 'none'")

    def offers_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def tool_schemas(self) -> list[dict[str, Any]] | None:
        """The tools as chat templates take them (transformers' JSON-schema form), or None when none are offered."""
        if not self.offers_tools():
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools or ()]

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Generation):
    # text, several texts, token ids, or several token-id lists (what lm-evaluation-harness sends)
    prompt: str | list[str] | list[int] | list[list[int]]
    # 0 with echo=true scores the prompt and generates nothing (loglikelihood requests)
    max_tokens: int | None = Field(None, ge=0)
    # the legacy shape: an int, how many alternatives to list per token (0: the chosen token's log-prob only)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    # the prompt is put before the answer's text (and its tokens before the answer's log-probs)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if not value or (isinstance(value, list) and any(isinstance(p, (str, list)) and not p for p in value)):
            raise ValueError("give a non-empty text, a list of non-empty texts, or non-empty lists of token ids")
        return value

    def check(self) -> None:
        super().check()
        if self.max_tokens == 0 and not self.echo:
            raise FieldError("max_tokens", "0 generates nothing. Fix: max_tokens >= 1, or echo=true (with "
                             "logprobs=N) to score the prompt")
        if self.best_of not in (None, self.n):
            raise FieldError("best_of", f"{self.best_of} is not supported, only best_of = n. Fix: leave it out")

    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)

    def token_budget(self) -> int | None:
        return self.max_tokens

    def logprob_count(self) -> int | None:
        return self.logprobs
