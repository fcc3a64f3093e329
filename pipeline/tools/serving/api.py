"""The HTTP side: OpenAI's /v1/models, /v1/chat/completions and /v1/completions (whole or streamed as server-sent
events), /health, /stats (how requests were batched) and the browser chat page at /.

Every request is checked before it reaches the model; a malformed one gets a 400 whose message names the field,
in OpenAI's error shape, so clients show it as they show OpenAI's own errors."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import html
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from pipeline.tools.serving.batcher import Batcher
from pipeline.tools.serving.decode import Delta, Done, Event, Failed, Prompt, Row, TokenLogprob
from pipeline.tools.serving.page_tools import add_tool_routes
from pipeline.tools.serving.responses import Choice, Shape, TokenNames, error_body, sse
from pipeline.tools.serving.schemas import ChatRequest, CompletionRequest, FieldError
from pipeline.tools.serving.tool_calls import ToolReplies, template_turns, tool_support, uses_tools
from pipeline.tools.serving.tool_stream import ToolStream
from pipeline.train.model.templates import chat_text, prompt_ids

# sequences (prompts x n) one request may ask for; each is a row of some batch
MAX_ROWS = 256


@dataclass
class Served:
    """What the routes serve: one model behind its batcher, under one name."""

    model_id: str
    tokenizer: Any
    batcher: Batcher
    # prompt + new tokens must fit the model's positions
    context: int
    # when a request gives no max_tokens
    default_max_tokens: int = 256
    # read from the environment by the caller; None: no key needed
    api_key: str | None = None
    # the run's own tools for the chat page (serving/page_tools.py); None: the page runs none
    page_tools: Any = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, param, code, kind)


def create_app(served: Served) -> FastAPI:
    app = FastAPI(title="pipeline serve", docs_url=None, redoc_url=None, openapi_url=None)
    _add_error_handlers(app)

    def authorized(authorization: str | None = Header(None)) -> None:
        if served.api_key is None:
            return
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), served.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>' with the "
                           "key the server was started with (PIPELINE_API_KEY)", code="invalid_api_key",
                           kind="authentication_error")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorized)])
    names = TokenNames(served.tokenizer)
    # Asked on the first request with tools, not at start: it imports TRL (its response templates).
    tool_problem = functools.cache(lambda: tool_support(served.tokenizer))

    @v1.get("/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served.model_id, "object": "model", "created": 0,
                                            "owned_by": "pipeline"}]}

    @v1.post("/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest) -> dict[str, Any] | StreamingResponse:
        _check_model(served, body.model)
        _checked(body)
        if served.tokenizer.chat_template is None:
            raise ApiError(400, "this model's tokenizer has no chat template. Fix: send raw text to "
                           "/v1/completions.", param="messages")
        tools = body.tool_schemas()
        if (tools or uses_tools(body.messages)) and (problem := tool_problem()) is not None:
            raise ApiError(400, problem, param="tools" if tools else "messages")
        try:
            turns = template_turns(body.messages)
        except FieldError as err:
            raise ApiError(400, str(err), param=err.field) from None
        try:
            ids = prompt_ids(served.tokenizer, turns, tools=tools)
        except Exception as err:  # the template's own checks, e.g. roles that do not alternate
            raise ApiError(400, f"messages: the chat template refused them: {err}", param="messages") from None
        replies = ToolReplies(served.tokenizer, chat_text(served.tokenizer, turns, tools=tools, generation_prompt=True),
                              tools, parallel=body.parallel_tool_calls is not False) if tools else None
        shape = Shape(served.model_id, chat=True, names=names, logprobs=body.logprob_count(), n=body.n,
                      replies=replies)
        return await _answer(served, body, [ids], shape, "messages")

    @v1.post("/completions", response_model=None)
    async def completions(body: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        _check_model(served, body.model)
        _checked(body)
        # Token ids are used as given (what harnesses send, having counted the context's tokens themselves).
        prompts = [served.tokenizer(p)["input_ids"] if isinstance(p, str) else _token_prompt(served, p)
                   for p in body.prompts()]
        echoes = [p if isinstance(p, str) else served.tokenizer.decode(p) for p in body.prompts()] \
            if body.echo else None
        shape = Shape(served.model_id, chat=False, names=names, logprobs=body.logprob_count(), n=body.n)
        return await _answer(served, body, prompts, shape, "prompt", echoes)

    add_tool_routes(v1, served.page_tools)
    app.include_router(v1)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": served.model_id}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return dataclasses.asdict(served.batcher.stats)

    # The model name goes into the page as text and as a JS string: escaped for each, since it comes from a path.
    page = ((files("pipeline") / "assets" / "webchat.html").read_text()
            .replace("{{MODEL_JSON}}", json.dumps(served.model_id).replace("<", "\\u003c"))
            .replace("{{MODEL_ID}}", html.escape(served.model_id)))

    @app.get("/", response_class=HTMLResponse)
    def web_chat() -> str:
        return page

    return app


def _check_model(served: Served, model: str) -> None:
    if model != served.model_id:
        raise ApiError(404, f"The model {model!r} does not exist: this server serves {served.model_id!r} "
                       f"(GET /v1/models). Fix: send model={served.model_id!r}.", param="model",
                       code="model_not_found")


def _checked(body: ChatRequest | CompletionRequest) -> None:
    try:
        body.check()
    except FieldError as err:
        raise ApiError(400, str(err), param=err.field) from None


def _token_prompt(served: Served, ids: list[int]) -> list[int]:
    vocab = len(served.tokenizer)
    if bad := [i for i in ids if not 0 <= i < vocab]:
        raise ApiError(400, f"prompt: token id {bad[0]} is outside this model's vocabulary (0..{vocab - 1}). Fix: "
                       "tokenize with this model's tokenizer, or send text.", param="prompt")
    return ids


async def _answer(served: Served, body: ChatRequest | CompletionRequest, prompts: list[list[int]], shape: Shape,
                  prompt_field: str, echoes: list[str] | None = None) -> dict[str, Any] | StreamingResponse:
    budget = body.token_budget()
    budget = served.default_max_tokens if budget is None else budget
    for ids in prompts:
        if len(ids) + budget > served.context:
            raise ApiError(400, f"{prompt_field}: {len(ids)} prompt tokens + max_tokens={budget} exceed the model's "
                           f"context of {served.context} tokens. Fix: shorten the {prompt_field} or lower "
                           "max_tokens.", param=prompt_field, code="context_length_exceeded")
    if len(prompts) * body.n > MAX_ROWS:
        raise ApiError(400, f"{prompt_field}: {len(prompts)} prompts x n={body.n} is more than {MAX_ROWS} "
                       "sequences in one request. Fix: split it into several requests.", param=prompt_field)
    events = _Events()
    echo = echoes is not None
    choices = [Choice(p * body.n + j, echo=echoes[p] if echo else "") for p in range(len(prompts))
               for j in range(body.n)]
    rows = [Row(ids, budget, body.temperature or 0.0, body.top_p or 1.0, tuple(body.stop or ()), seed,
                logprobs=shape.logprobs, echo=echo, emit=events.sender(p * body.n + j))
            for p, ids in enumerate(prompts) for j, seed in enumerate(body.seeds())]
    served.batcher.submit(rows)
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_stream(shape, events, rows, choices, usage), media_type="text/event-stream")
    try:
        while any(c.done is None for c in choices):
            index, event = await events.get()
            if isinstance(event, Failed):
                raise ApiError(500, event.message, kind="server_error")
            choice = choices[index]
            if isinstance(event, Done):
                choice.done = event
            else:
                choice.tokens.extend(event.logprobs)
                if isinstance(event, Delta):
                    choice.parts.append(event.text)
    finally:
        for row in rows:
            row.cancelled.set()  # the client left mid-answer (or it is over): stop spending the batch's time on it
    return shape.whole(choices)


async def _stream(shape: Shape, events: _Events, rows: list[Row], choices: list[Choice],
                  include_usage: bool) -> AsyncIterator[str]:
    offsets = [0] * len(choices)
    # with tools offered, content streams until a call may start; the calls go out as tool_call deltas at the end
    tools = [ToolStream(shape.replies) for _ in choices] if shape.chat and shape.replies else None

    def piece(index: int, text: str, tokens: tuple[TokenLogprob, ...], **kw: Any) -> str:
        chunk = shape.chunk(index, text, tokens=tokens, offset=offsets[index], **kw)
        if shape.names is not None:
            offsets[index] += sum(len(shape.names.text(t.id)) for t in tokens)
        return sse(chunk)

    try:
        for c in choices:
            if shape.chat:
                yield sse(shape.chunk(c.index, "", first=True))
        open_choices = len(choices)
        while open_choices:
            index, event = await events.get()
            if isinstance(event, Prompt):
                yield piece(index, choices[index].echo, event.logprobs)
            elif isinstance(event, Delta) and tools:
                text, tokens = tools[index].feed(event.text, event.logprobs)
                if text:
                    yield piece(index, text, tuple(tokens))
            elif isinstance(event, Delta):
                yield piece(index, event.text, event.logprobs)
            elif isinstance(event, Failed):
                yield sse(error_body(event.message, kind="server_error"))
                break
            else:
                choices[index].done = event
                open_choices -= 1
                reason = event.finish_reason
                if tools:
                    text, tokens, calls, reason = tools[index].finish(reason)
                    if text:
                        yield piece(index, text, tuple(tokens))
                    for call in calls:
                        yield sse(shape.tool_chunk(index, call))
                yield sse(shape.chunk(index, finish_reason=reason))
        else:
            if include_usage:
                yield sse(shape.usage_chunk(choices))
        yield sse("[DONE]")
    finally:
        for row in rows:
            row.cancelled.set()


class _Events:
    """A request's events, each tagged with its choice, handed from the batcher's thread to the event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    def sender(self, index: int) -> Callable[[Event], None]:
        def put(event: Event) -> None:
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, (index, event))
            except RuntimeError:  # the loop closed (server shutting down): nobody is waiting any more
                pass

        return put

    async def get(self) -> tuple[int, Event]:
        return await self._queue.get()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Any, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Any, err: RequestValidationError) -> JSONResponse:
        problems = err.errors()
        if problems[0]["type"] == "json_invalid":
            return JSONResponse(error_body(f"the body is not valid JSON: {problems[0]['ctx']['error']} at "
                                           f"character {problems[0]['loc'][-1]}"), status_code=400)
        fields = [".".join(str(part) for part in p["loc"] if part != "body") or "body" for p in problems]
        where = fields[0]
        # pydantic prefixes our validators' messages with "Value error, ": the field name says enough
        message = "; ".join(f"{f}: {p['msg'].removeprefix('Value error, ')}"
                            for f, p in zip(fields, problems, strict=True))
        return JSONResponse(error_body(message, param=where), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Any, err: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(err.detail)), status_code=err.status_code)
