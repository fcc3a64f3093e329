"""Tools through `pipeline.tools.serve`, with the official `openai` client against a real server process on
127.0.0.1: a tiny GRPO run trained with env=calculator and the qwen2.5 template, its logits scripted to write tool
calls (tests/helpers/scripted_serve.py), so the whole path runs: tools rendered by the chat template, the reply
parsed by the response template training used, OpenAI's tool_calls out, the call and its role=tool result back in.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.helpers.runs import REPO
from tests.helpers.servers import server

TOOLS = [{"type": "function", "function": {
    "name": "calculate", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]
ASK = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def url(tool_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve_tools") / "server.log"
    with server("tests.helpers.scripted_serve", str(tool_run), "name=tools", "batch_wait_ms=20", log=log) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, messages: list[dict] = ASK, **kw) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model="tools", messages=messages, **{"tools": TOOLS, "max_tokens": 96, **kw})


def post(url: str, body: dict, route: str = "/v1/chat/completions") -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_call_comes_back_as_openai_tool_calls_and_its_result_goes_back_in(client: openai.OpenAI) -> None:
    first = ask(client)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    message = choice.message
    assert message.content is None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "calculate"
    assert isinstance(call.function.arguments, str) and json.loads(call.function.arguments) == {"expression": "2 + 3"}

    # The assistant message as the client holds it, then the tool's result: the script answers from the result
    # only if the call and the result were rendered back as the qwen2.5 template writes them.
    history = [*ASK, message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "5"}]
    second = ask(client, history)
    assert second.choices[0].message.content == "The answer is 5."
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    # the same conversation with tool_choice="none" still renders the earlier call and its result
    assert ask(client, history, tool_choice="none").choices[0].message.content == "The answer is 5."


def test_two_calls_get_their_own_ids_and_parallel_false_keeps_the_first(client: openai.OpenAI) -> None:
    two = [{"role": "user", "content": "TWO sums please"}]
    message = ask(client, two).choices[0].message
    assert message.content == "Two calls."
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [{"expression": "2 + 3"},
                                                                               {"expression": "4 * 4"}]
    assert len({c.id for c in message.tool_calls}) == 2
    single = ask(client, two, parallel_tool_calls=False).choices[0].message
    assert [json.loads(c.function.arguments) for c in single.tool_calls] == [{"expression": "2 + 3"}]


def test_a_malformed_call_and_a_call_cut_short_come_back_as_plain_content(client: openai.OpenAI) -> None:
    broken = ask(client, [{"role": "user", "content": "BROKEN call"}]).choices[0]
    assert broken.finish_reason == "stop" and broken.message.tool_calls is None
    assert broken.message.content.startswith('<tool_call>\n{"name": "calculate", "arguments": {"expression": \n')
    cut = ask(client, max_tokens=10).choices[0]  # the call's JSON ends mid-way
    assert cut.finish_reason == "length" and cut.message.tool_calls is None and "<tool_call>" in cut.message.content


def test_tool_choice_none_offers_no_tools(client: openai.OpenAI) -> None:
    offered, withheld = ask(client), ask(client, tool_choice="none", max_tokens=4)
    # the script calls only when the prompt lists tools: here the model's own tokens, no tools in the prompt
    assert withheld.choices[0].message.tool_calls is None and withheld.choices[0].finish_reason != "tool_calls"
    assert withheld.usage.prompt_tokens < offered.usage.prompt_tokens - 50


@pytest.mark.parametrize(("extra", "param", "says"), [
    ({"tool_choice": "required"}, "tool_choice", "cannot force a tool call"),
    ({"tool_choice": {"type": "function", "function": {"name": "calculate"}}}, "tool_choice", "cannot force"),
])
def test_what_is_not_served_is_a_400_that_says_so(client: openai.OpenAI, extra: dict, param: str, says: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, **extra)
    assert err.value.param == param and says in err.value.message


def streamed(client: openai.OpenAI, messages: list[dict] = ASK, **kw) -> dict:
    """The streamed answer put together as a client does: content, tool calls by index, finish_reason."""
    content, calls, reasons, roles = "", {}, [], []
    for chunk in ask(client, messages, stream=True, **kw):
        for choice in chunk.choices:
            delta = choice.delta
            roles += [delta.role] if delta.role else []
            content += delta.content or ""
            for piece in delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                call["name"] += (piece.function.name or "") if piece.function else ""
                call["arguments"] += (piece.function.arguments or "") if piece.function else ""
            reasons += [choice.finish_reason] if choice.finish_reason else []
    return {"content": content, "calls": [calls[i] for i in sorted(calls)], "reasons": reasons, "roles": roles}


def test_a_streamed_call_comes_as_tool_call_deltas_with_finish_reason_tool_calls(client: openai.OpenAI) -> None:
    one = streamed(client)
    assert one["roles"] == ["assistant"] and one["reasons"] == ["tool_calls"]
    assert one["content"] == "" and len(one["calls"]) == 1  # the call's text never leaks out as content
    call = one["calls"][0]
    assert call["id"].startswith("call_") and call["name"] == "calculate"
    assert json.loads(call["arguments"]) == {"expression": "2 + 3"}
    # content before the calls streams as content; each call has its own index and id
    two = streamed(client, [{"role": "user", "content": "TWO sums please"}])
    assert two["content"].strip() == "Two calls." and two["reasons"] == ["tool_calls"]
    assert [json.loads(c["arguments"]) for c in two["calls"]] == [{"expression": "2 + 3"}, {"expression": "4 * 4"}]
    assert len({c["id"] for c in two["calls"]}) == 2
    assert len(streamed(client, [{"role": "user", "content": "TWO sums"}], parallel_tool_calls=False)["calls"]) == 1


def test_a_streamed_answer_without_a_parsed_call_is_the_whole_answers_content(client: openai.OpenAI) -> None:
    for messages, kw in (([{"role": "user", "content": "BROKEN call"}], {}), (ASK, {"max_tokens": 10})):
        whole = ask(client, messages, **kw).choices[0]
        stream = streamed(client, messages, **kw)
        assert stream["calls"] == [] and stream["content"] == whole.message.content
        assert stream["reasons"] == [whole.finish_reason] and "<tool_call>" in stream["content"]
    # the round trip streams too: the result goes back in, the answer streams as plain content
    first = ask(client).choices[0].message
    history = [*ASK, first.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "5"}]
    answer = streamed(client, history)
    assert answer["content"] == "The answer is 5." and answer["reasons"] == ["stop"] and answer["calls"] == []


def test_a_server_without_tools_on_runs_no_tools(url: str) -> None:
    with urllib.request.urlopen(f"{url}/v1/tools?conversation=c1", timeout=30) as response:
        assert json.loads(response.read())["tools"] == []  # the page offers none
    status, body = post(url, {"conversation": "c1", "name": "calculate", "arguments": {}}, "/v1/tools/call")
    assert status == 404 and "tools=on" in body["error"]["message"]


def test_bad_tool_turns_are_400s_naming_the_field(url: str) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "calculate", "arguments": "{\"expression\": "}}
    status, body = post(url, {"model": "tools", "messages": [*ASK, {"role": "assistant", "tool_calls": [call]}]})
    assert status == 400 and body["error"]["param"] == "messages.1.tool_calls.0.function.arguments"
    status, body = post(url, {"model": "tools", "messages": [*ASK, {"role": "tool", "tool_call_id": "call_9",
                                                                     "content": "5"}]})
    assert status == 400 and body["error"]["param"] == "messages.1.tool_call_id" and "answers no" in body["error"][
        "message"]
    status, body = post(url, {"model": "tools", "messages": ASK, "tools": [{"type": "function", "function": {}}]})
    assert status == 400 and body["error"]["param"].startswith("tools.0.function")


def test_a_template_that_drops_tools_is_refused_with_the_fix() -> None:
    from transformers import AutoTokenizer

    from pipeline.tools.serving.tool_calls import tool_support

    own = AutoTokenizer.from_pretrained(REPO / "pipeline" / "assets" / "smollm2_tokenizer")  # renders no tools
    problem = tool_support(own)
    assert problem and "drops the tool schemas" in problem and "model.chat_template=qwen2.5" in problem
    own.chat_template = (REPO / "pipeline" / "assets" / "chat_templates" / "qwen2.5.jinja").read_text()
    assert tool_support(own) is None


def test_openai_messages_become_the_templates_turns() -> None:
    from pipeline.tools.serving.schemas import ChatRequest
    from pipeline.tools.serving.tool_calls import template_turns

    call = {"id": "call_7", "type": "function", "function": {"name": "calculate", "arguments": '{"expression": "1"}'}}
    body = ChatRequest.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": "Be terse."}, *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_7", "content": [{"type": "text", "text": "1"}]}]})
    assert template_turns(body.messages) == [
        {"role": "system", "content": "Be terse."}, *ASK,
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_7", "type": "function", "function": {"name": "calculate", "arguments": {"expression": "1"}}}]},
        {"role": "tool", "content": "1", "tool_call_id": "call_7", "name": "calculate"}]
