"""The OpenAI fields evaluation harnesses and samplers send, against a real `python -m pipeline.tools.serve` process
on 127.0.0.1 with the official `openai` client: n, logprobs / top_logprobs, echo with prompt log-probs, seed,
response_format, and the served model's name. Log-probs are checked against an in-process forward of the same
tiny model, so a shifted position or a tempered distribution would fail."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch

from tests.helpers.servers import server

CHAT = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def url(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # No name=: the default served name is part of what is tested.
    log = tmp_path_factory.mktemp("serve_openai") / "server.log"
    with server("serve", str(tiny_run), "batch_wait_ms=100", log=log) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


@pytest.fixture(scope="module")
def tuned(tiny_run: Path):
    from pipeline.tools.tuned import load_tuned

    return load_tuned(tiny_run)


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=30) as response:
        return json.loads(response.read())


def next_token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log-softmax of every position's logits, one unpadded forward: row t predicts token t + 1."""
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def test_the_default_name_is_stage_and_run_id_never_a_number(model: str, tiny_run: Path, tmp_path: Path) -> None:
    from lm_eval.utils import simple_parse_args_string

    from pipeline.tools.serve import default_name

    assert model == f"sft-{tiny_run.name}"
    # A real run id, as lm-eval reads it from model_args: the name must come back as the same string.
    run = tmp_path / "20261202_193751"
    run.mkdir()
    shutil.copy(tiny_run / "config.yaml", run / "config.yaml")
    assert default_name(run) == default_name(run / "final") == "sft-20261202_193751"
    assert simple_parse_args_string(f"model={default_name(run)}")["model"] == "sft-20261202_193751"
    assert simple_parse_args_string("model=20261202_193751")["model"] != "20261202_193751"  # why it matters
    (tmp_path / "12345").mkdir()
    assert default_name(tmp_path / "12345") == "model-12345"


def test_an_unknown_model_is_openai_404_model_not_found(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-4", prompt="Hi", max_tokens=2)
    assert err.value.status_code == 404 and err.value.code == "model_not_found" and err.value.param == "model"
    assert err.value.body["type"] == "invalid_request_error" and model in err.value.message


def test_n_choices_are_sampled_together_in_one_batch(client: openai.OpenAI, model: str, url: str) -> None:
    before = stats(url)
    out = client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, n=2, temperature=1.0, seed=11)
    after = stats(url)
    assert [c.index for c in out.choices] == [0, 1]
    assert all(c.message.content for c in out.choices)
    assert out.usage.completion_tokens == 16 and out.usage.prompt_tokens < 40  # the prompt counts once
    assert (after["batches"] - before["batches"], after["rows"] - before["rows"]) == (1, 2)
    # choice 0 draws from the seed itself: the n=1 answer with that seed
    one = client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, temperature=1.0, seed=11)
    assert one.choices[0].message.content == out.choices[0].message.content
    assert out.choices[1].message.content != out.choices[0].message.content


def test_a_seed_repeats_alone_and_batched_with_another_request(client: openai.OpenAI, model: str, url: str) -> None:
    def sample(prompt: str) -> str:
        return client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=1.0,
                                         seed=1234).choices[0].text

    alone = sample("Once upon a time")
    assert sample("Once upon a time") == alone
    before, answers, start = stats(url), {}, threading.Barrier(2)

    def worker(prompt: str) -> None:
        start.wait(timeout=30)
        answers[prompt] = sample(prompt)

    threads = [threading.Thread(target=worker, args=(p,)) for p in ("Once upon a time", "A longer, other prompt here")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert stats(url)["batched_requests"] - before["batched_requests"] == 2, "the two requests were not batched"
    assert answers["Once upon a time"] == alone


def test_chat_logprobs_are_the_model_log_softmax(client: openai.OpenAI, model: str, tuned) -> None:
    from pipeline.train.model.templates import prompt_ids

    net, tokenizer = tuned
    out = client.chat.completions.create(model=model, messages=CHAT, max_tokens=6, logprobs=True, top_logprobs=3)
    entries = out.choices[0].logprobs.content
    assert len(entries) == 6 and "".join(e.token for e in entries) == out.choices[0].message.content
    # The same greedy decode in process, one unpadded forward per token.
    seq = prompt_ids(tokenizer, CHAT)
    for entry in entries:
        expected = next_token_logprobs(net, seq)[-1]
        token = int(expected.argmax())
        assert entry.token == tokenizer.decode([token]) and bytes(entry.bytes).decode(errors="replace") == entry.token
        assert abs(entry.logprob - float(expected[token])) < 1e-4
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob == entry.logprob  # greedy: the best
        best = expected.topk(3).values.tolist()
        assert all(abs(t.logprob - v) < 1e-4 for t, v in zip(entry.top_logprobs, best, strict=True))
        seq.append(token)
    streamed = [c.choices[0].logprobs.content for c in client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=6, logprobs=True, top_logprobs=3, stream=True)
        if c.choices and c.choices[0].logprobs]
    assert [e.logprob for chunk in streamed for e in chunk] == [e.logprob for e in entries]


def test_completions_echo_scores_the_prompt_as_a_forward(client: openai.OpenAI, model: str, tuned) -> None:
    net, tokenizer = tuned
    text = "The capital of France is Paris, and the capital of Italy is"
    ids = tokenizer(text)["input_ids"]
    expected = next_token_logprobs(net, ids)
    for prompt in (text, ids):  # text, and token ids as lm-eval sends them
        out = client.completions.create(model=model, prompt=prompt, max_tokens=0, echo=True, logprobs=2)
        choice = choice0 = out.choices[0]
        lp = choice.logprobs
        assert choice.text == text and out.usage.completion_tokens == 0
        assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        got = torch.tensor(lp.token_logprobs[1:])
        want = expected[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
        assert all(len(top) in (2, 3) and lp.token_logprobs[t] in top.values() for t, top in
                   enumerate(lp.top_logprobs) if top)
        assert lp.text_offset == [len(tokenizer.decode(ids[:t])) for t in range(len(ids))]
    # lm-eval's loglikelihood request: max_tokens=1, the prompt's tokens and then the one generated token
    out = client.completions.create(model=model, prompt=[ids, ids[:5]], max_tokens=1, echo=True, logprobs=1,
                                    temperature=0)
    assert [len(c.logprobs.tokens) for c in out.choices] == [len(ids) + 1, 6]
    assert out.choices[0].logprobs.token_logprobs[:-1] == choice0.logprobs.token_logprobs
    assert abs(out.choices[0].logprobs.token_logprobs[-1] - float(expected[-1].max())) < 1e-4


def test_unsupported_asks_get_a_400_naming_the_field(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError, match="json_object' is not supported") as err:
        client.chat.completions.create(model=model, messages=CHAT, response_format={"type": "json_object"})
    assert err.value.param == "response_format"
    plain = client.chat.completions.create(model=model, messages=CHAT, max_tokens=3, response_format={"type": "text"})
    assert plain.choices[0].message.content
    for kw, field in ((dict(top_logprobs=2), "top_logprobs"), (dict(presence_penalty=0.5), "presence_penalty"),
                      (dict(n=99), "n")):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=model, messages=CHAT, max_tokens=3, **kw)
        assert err.value.param == field, err.value.message
    with pytest.raises(openai.BadRequestError, match="max_tokens") as err:
        client.completions.create(model=model, prompt="Hi", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="outside this model's vocabulary"):
        client.completions.create(model=model, prompt=[10**7], max_tokens=1)
