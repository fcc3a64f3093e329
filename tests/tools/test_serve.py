"""`python -m pipeline.tools.serve` as users meet it: a real server process on 127.0.0.1 serving a finished tiny
run, driven by the official `openai` client (and raw HTTP where the client would refuse to send bad input)."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.helpers.servers import server

KEY = "sk-test-canary-1f2e3d"
CHAT = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def served(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    # The key is set for the whole module: every client below must send it, and it must never reach the log.
    with server("serve", str(tiny_run), "name=tiny-sft", "batch_wait_ms=50", log=log, PIPELINE_API_KEY=KEY) as url:
        yield url, log


@pytest.fixture
def client(served: tuple[str, Path]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served[0]}/v1", api_key=KEY, max_retries=0, timeout=120)


def ask(client: openai.OpenAI, messages: list[dict] = CHAT, **kw) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model="tiny-sft", messages=messages, **{"max_tokens": 12, **kw})


def post(url: str, body: object, key: str | None = KEY) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_models_and_greedy_chat_serve_the_trained_model(client: openai.OpenAI, tiny_run: Path) -> None:
    from pipeline.tools.tuned import load_tuned
    from pipeline.train.observe.heldout import generate_greedy

    assert [m.id for m in client.models.list().data] == ["tiny-sft"]
    first, second = ask(client), ask(client)
    text = first.choices[0].message.content
    assert text and text == second.choices[0].message.content, "greedy answers differ"
    assert first.choices[0].finish_reason == "length" and first.usage.completion_tokens == 12
    # The adapter on its base, loaded by the tools' own loader and decoded by transformers' generate().
    model, tokenizer = load_tuned(tiny_run)
    assert text == generate_greedy(model, tokenizer, [CHAT], 12)[0]


def test_streamed_chat_joins_to_the_whole_answer(client: openai.OpenAI) -> None:
    whole = ask(client).choices[0].message.content
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1, "the answer came in one piece: not streamed"
    assert "".join(pieces) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12


def test_text_completion_and_max_tokens(client: openai.OpenAI) -> None:
    for n in (1, 5):
        out = client.completions.create(model="tiny-sft", prompt="Once upon a time", max_tokens=n)
        assert out.usage.completion_tokens <= n and out.choices[0].finish_reason in ("length", "stop")
        assert out.choices[0].text
    again = client.completions.create(model="tiny-sft", prompt="Once upon a time", max_tokens=5)
    assert again.choices[0].text == out.choices[0].text
    sampled = [client.completions.create(model="tiny-sft", prompt="Once", max_tokens=8, temperature=1.0, seed=7)
               .choices[0].text for _ in range(2)]
    assert sampled[0] == sampled[1], "the same seed gave different samples"


def test_a_stop_string_cuts_the_answer_whole_and_streamed(client: openai.OpenAI) -> None:
    text = ask(client, max_tokens=16).choices[0].message.content
    stop = text[6:9]
    expected = text[: text.index(stop)]
    cut = ask(client, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, max_tokens=16, stop=stop, stream=True))
    assert streamed == expected


def test_concurrent_requests_are_batched_and_answer_as_alone(client: openai.OpenAI, served: tuple[str, Path]) -> None:
    questions = [[{"role": "user", "content": f"What is {a} + {a}?"}] for a in (1, 22, 333, 4444)]
    alone = [ask(client, q, max_tokens=16).choices[0].message.content for q in questions]
    before = json.loads(urllib.request.urlopen(f"{served[0]}/stats", timeout=10).read())
    answers: dict[int, str] = {}
    start = threading.Barrier(len(questions))

    def worker(i: int) -> None:
        start.wait(timeout=30)
        answers[i] = ask(client, questions[i], max_tokens=16).choices[0].message.content

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers) == [0, 1, 2, 3], "a concurrent request went unanswered"
    # Prompts of different lengths share one left-padded batch; each must still get its own greedy answer.
    assert [answers[i] for i in range(4)] == alone
    after = json.loads(urllib.request.urlopen(f"{served[0]}/stats", timeout=10).read())
    assert after["requests"] - before["requests"] == 4
    assert after["batched_requests"] - before["batched_requests"] >= 2, after
    assert re.search(r"batch of [2-4] request\(s\)", served[1].read_text())


def test_malformed_requests_get_400_naming_the_field(client: openai.OpenAI, served: tuple[str, Path]) -> None:
    url = f"{served[0]}/v1/chat/completions"
    status, body = post(url, {"model": "tiny-sft"})
    assert status == 400 and body["error"]["message"] == "messages: Field required"
    assert body["error"]["param"] == "messages" and body["error"]["type"] == "invalid_request_error"
    status, body = post(url, {"model": "tiny-sft", "messages": CHAT, "temperature": "hot"})
    assert status == 400 and body["error"]["message"].startswith("temperature: ")
    status, body = post(url, "{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-sft", messages=[{"role": "user", "content": 3}])
    assert err.value.status_code == 400 and "messages.0.content" in err.value.message
    with pytest.raises(openai.NotFoundError, match="'gpt-4' does not exist") as missing:
        client.chat.completions.create(model="gpt-4", messages=CHAT)
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    assert missing.value.body["type"] == "invalid_request_error" and "tiny-sft" in missing.value.message
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        ask(client, max_tokens=0)


def test_the_api_key_is_enforced_and_never_logged(served: tuple[str, Path]) -> None:
    url, log = served
    for key in (None, "sk-wrong"):
        status, body = post(f"{url}/v1/chat/completions", {"model": "tiny-sft", "messages": CHAT}, key=key)
        assert status == 401 and "PIPELINE_API_KEY" in body["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert "API key required" in log.read_text() and KEY not in log.read_text()


def test_a_padded_batch_decodes_each_row_as_generate_does_alone(tiny_run: Path) -> None:
    """In process, on a tiny model whose answers depend on the whole prompt: the tuned run and its small-init base
    repeat one token whatever they read, which would hide a padding or attention-mask mistake."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.tools.serving.decode import Delta, Done, Row, decode_batch
    from pipeline.tools.tuned import load_untuned
    from pipeline.train.model.templates import prompt_ids
    from pipeline.train.observe.heldout import generate_greedy

    base, tokenizer = load_untuned(tiny_run)
    base.config.initializer_range = 0.5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(base.config).eval()
    questions = [[{"role": "user", "content": q}] for q in ("Hi", "What is 22 + 22?", "Name three colours, please.")]
    texts, reasons = [[] for _ in questions], {}

    def collect(i: int):
        return lambda e: texts[i].append(e.text) if isinstance(e, Delta) else reasons.__setitem__(i, e)

    rows = [Row(prompt_ids(tokenizer, q), max_tokens=10, emit=collect(i)) for i, q in enumerate(questions)]
    assert len({len(r.prompt_ids) for r in rows}) == 3, "the prompts must differ in length to need padding"
    decode_batch(model, tokenizer, rows)
    alone = [generate_greedy(model, tokenizer, [q], 10)[0] for q in questions]
    assert ["".join(t) for t in texts] == alone
    assert all(isinstance(d, Done) and d.completion_tokens == 10 for d in reasons.values())
