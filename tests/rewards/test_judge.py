"""The LLM judge term against real HTTP servers on 127.0.0.1: a stand-in endpoint (tests/judge_stub.py) for the exact
cases (scores, timeouts, garbage, retries, the key), and the project's own `python -m pipeline.tools.serve` with the
tiny model for the real OpenAI-compatible path and its concurrency."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from datasets import Dataset

from pipeline.config.checks import to_run_config
from pipeline.rewards import RewardError, build_reward_funcs, score_completions
from pipeline.rewards.judge import Judge, JudgeError
from tests.helpers.judge_stub import judge_stub
from tests.helpers.runs import REPO, compose_config, tiny_model_dir
from tests.helpers.servers import server

KEY = "sk-judge-canary-7d1c0b"


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("judge") / "stub.log"
    with judge_stub(log, slow_s=3, JUDGE_STUB_KEY=KEY) as url:
        yield url


def judge(url: str, mode: str, **fields: object) -> tuple[list, list[float]]:
    term = {"function": "judge", "url": f"{url}/v1", "model": mode, "prompt": "Rate: {completion} for {answer}",
            **fields}
    return build_reward_funcs({"judge": term})


def score(funcs: list, completions: list[str], answers: list[str] | None = None) -> list[float | None]:
    per_term, _ = score_completions(funcs, [1.0], ["q"] * len(completions), completions,
                                    {"answer": answers or ["a"] * len(completions)})
    return per_term["judge"]


def stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{url}/stats", timeout=10).read())


def test_scores_come_from_the_reply_concurrently_and_scaled(stub: str) -> None:
    funcs, _ = judge(stub, "ok", max_score=10, max_concurrency=4)
    before = stats(stub)
    start = time.perf_counter()
    assert score(funcs, [f"<<{n}>>" for n in (0, 5, 10, 7, 2, 3, 9, 1)]) == [0.0, 0.5, 1.0, 0.7, 0.2, 0.3, 0.9, 0.1]
    elapsed = time.perf_counter() - start
    after = stats(stub)
    assert after["requests"] - before["requests"] == 8
    # 8 requests of >= 50 ms each, at most 4 in flight: overlapped, yet never more than asked
    assert 2 <= after["max_inflight"]["ok"] <= 4 and elapsed < 8 * 0.05 + 1.0
    assert funcs[0].term.failures == 0


def test_a_score_out_of_range_or_missing_is_a_counted_zero(stub: str) -> None:
    funcs, _ = judge(stub, "ok", max_score=10, on_error="zero")
    assert score(funcs, ["<<11>>", "<<4>>", "no mark"]) == [0.0, 0.4, 0.0]
    assert funcs[0].term.failures == 1  # "no mark" replies Score: 0, which is in range
    funcs, _ = judge(stub, "noscore", on_error="zero")
    assert score(funcs, ["<<3>>", "<<4>>"]) == [0.0, 0.0] and funcs[0].term.failures == 2


def test_a_judge_that_times_out_scores_zero_and_never_hangs(stub: str, caplog: pytest.LogCaptureFixture) -> None:
    funcs, _ = judge(stub, "slow", timeout_s=0.5, retries=1, on_error="zero")
    start = time.perf_counter()
    assert score(funcs, ["<<3>>", "<<4>>"]) == [0.0, 0.0]
    # two attempts of 0.5 s plus a 0.5 s back-off, both rows at once: far below the stub's 3 s
    assert time.perf_counter() - start < 2.5
    assert funcs[0].term.failures == 2
    assert "reward term 'judge': 2 of 2 rows failed" in caplog.text
    assert "no reply in 0.5 s after 2 attempt" in caplog.text


def test_garbage_stops_the_run_naming_term_row_and_cause(stub: str) -> None:
    funcs, _ = judge(stub, "garbage", retries=0)
    with pytest.raises(RewardError, match=r"reward term 'judge' failed on row 0 of 2 \(prompt 'q', completion "
                                          r"'<<3>>'\): JudgeError: .*not an OpenAI chat reply.*on_error=zero"):
        score(funcs, ["<<3>>", "<<4>>"])


def test_retries_with_back_off_recover_from_503(stub: str) -> None:
    funcs, _ = judge(stub, "flaky", retries=2, max_score=10)
    before = stats(stub)
    assert score(funcs, ["<<6>>", "<<8>>"]) == [0.6, 0.8]
    assert stats(stub)["requests"] - before["requests"] == 4


def test_the_key_comes_from_the_named_env_var_only(stub: str, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    funcs, _ = judge(stub, "auth", api_key_env="JUDGE_TEST_KEY")
    before = stats(stub)["authorized"]
    assert score(funcs, ["<<2>>"]) == [2.0] and stats(stub)["authorized"] == before + 1
    monkeypatch.setenv("JUDGE_TEST_KEY", "wrong")
    with pytest.raises(RewardError, match="HTTP 401") as info:
        score(funcs, ["<<2>>"])
    assert KEY not in str(info.value) and "wrong" not in str(info.value) and KEY not in caplog.text


def test_the_template_sees_prompt_completion_and_any_column(stub: str) -> None:
    funcs, _ = judge(stub, "ok", prompt="{prompt}|{topic}|{completion}")
    per_term, _ = score_completions(funcs, [1.0], ["<<1>>"], ["x"], {"topic": ["<<9>>"]})
    assert per_term["judge"] == [1.0]  # the stub scores the first <<N>>: the prompt's
    # held-out evaluation passes `datasets` columns (not lists): they are per-row values all the same
    rows = Dataset.from_dict({"prompt": ["<<3>>", "<<4>>"], "topic": ["<<5>>", "<<6>>"]})
    per_term, _ = score_completions(funcs, [1.0], rows["prompt"], ["x", "y"], {"topic": rows["topic"]})
    assert per_term["judge"] == [3.0, 4.0]
    funcs, _ = judge(stub, "ok", prompt="{topic} {completion}")
    per_term, _ = score_completions(funcs, [1.0], rows["prompt"], ["x", "y"], {"topic": rows["topic"]})
    assert per_term["judge"] == [5.0, 6.0]
    funcs, _ = judge(stub, "ok", prompt="{missing} {completion}")
    with pytest.raises(RewardError, match=r"uses \{missing\} but the data has no such column"):
        score(funcs, ["<<1>>"])


@pytest.mark.parametrize(("overrides", "message"), [
    ([], "reward.terms.judge (judge) needs url and model: set reward.terms.judge.url=http://HOST:PORT/v1"),
    (["reward.terms.judge.url=127.0.0.1:8000", "reward.terms.judge.model=m"], "is not an http(s) URL"),
    (["reward.terms.judge.url=http://h/v1", "reward.terms.judge.model=m", "reward.terms.judge.api_key_env=NO_SUCH_VAR"],
     "the environment variable NO_SUCH_VAR is not set. Fix: export NO_SUCH_VAR=..."),
    (["reward.terms.judge.url=http://h/v1", "reward.terms.judge.model=m", "reward.terms.judge.prompt='rate {prompt}'"],
     "never shows the judge the completion"),
    (["reward.terms.judge.url=http://h/v1", "reward.terms.judge.model=m", "reward.terms.judge.max_concurrency=0"],
     "max_concurrency=0 must be >= 1"),
    (["reward.terms.judge.url=http://h/v1", "reward.terms.judge.model=m", "reward.terms.judge.on_error=skip"],
     "on_error"),
    (["reward=correctness", "reward.terms.correctness.url=http://h/v1"],
     "reward.terms.correctness.url is not read by reward 'correctness' (only by judge terms)"),
])
def test_validation_refuses_a_judge_it_cannot_use_with_the_fix(overrides: list[str], message: str) -> None:
    # a bad on_error value is Hydra's (typed enum, at compose time); the others are the checks' ConfigError
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_run_config(compose_config(["reward=judge", *overrides]))


def test_judge_parser_defaults() -> None:
    parse = Judge("j", {"url": "http://h/v1", "model": "m"}).parse
    assert [parse("Score: 7"), parse("score = 7.5/10"), parse("I give it 3 of 10"), parse("SCORE:-1")] == [
        7.0, 7.5, 3.0, -1.0]
    custom = Judge("j", {"url": "http://h/v1", "model": "m", "score_regex": r"Rating: (\d)", "max_score": 5}).parse
    assert custom("Score: 9. Rating: 4") == 0.8


# ---- the project's own server: the real OpenAI-compatible path ------------------------------------------------


def test_judge_against_pipeline_serve_with_the_tiny_model(model_cache: Path, tmp_path: Path) -> None:
    # the tiny random model's weights beside its tokenizer (SmolLM2's): serving it needs no training run
    served = shutil.copytree(tiny_model_dir(model_cache), tmp_path / "judge_model")
    shutil.copytree(REPO / "pipeline" / "assets" / "smollm2_tokenizer", served, dirs_exist_ok=True)
    with server("serve", str(served), "name=tiny-judge", "batch_wait_ms=50", log=tmp_path / "serve.log") as url:
        funcs, _ = judge(url, "tiny-judge", on_error="zero", kwargs={"max_tokens": 8}, max_concurrency=8)
        completions = [f"answer {n}" for n in range(8)]
        before = stats(url)
        start = time.perf_counter()
        scores = score(funcs, completions)
        elapsed = time.perf_counter() - start
        after = stats(url)
        # the same requests one by one (greedy: the same replies), parsed by the judge's own parser
        judge_obj = funcs[0].term.fn
        expected, failed = [], 0
        for completion in completions:
            body = {"model": "tiny-judge", "max_tokens": 8, "temperature": 0.0,
                    "messages": [{"role": "user", "content": f"Rate: {completion} for a"}]}
            request = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            reply = json.loads(urllib.request.urlopen(request, timeout=120).read())["choices"][0]["message"]["content"]
            try:
                expected.append(judge_obj.parse(reply))
            except JudgeError:
                expected.append(0.0)
                failed += 1
    assert scores == expected and funcs[0].term.failures == failed
    assert after["requests"] - before["requests"] == 8 and after["batched_requests"] - before["batched_requests"] >= 2
    print(f"judge over pipeline.tools.serve (tiny, 8 tokens): {8 / elapsed:.1f} rows/s")


def test_the_default_prompt_fits_data_with_or_without_answers_and_a_closed_port_is_a_failure(stub: str) -> None:
    funcs, _ = build_reward_funcs({"judge": {"function": "judge", "url": f"{stub}/v1", "model": "ok"}})
    with_answer, _ = score_completions(funcs, [1.0], ["<<2>>"], ["x"], {"answer": ["7"]})
    without, _ = score_completions(funcs, [1.0], ["<<3>>"], ["x"], {})
    assert with_answer["judge"] == [2.0] and without["judge"] == [3.0]
    from pipeline.tools.serving.process import free_port

    closed = {"function": "judge", "url": f"http://127.0.0.1:{free_port()}/v1", "model": "ok", "retries": 1,
              "on_error": "zero"}
    funcs, _ = build_reward_funcs({"judge": closed})
    assert score(funcs, ["<<1>>"]) == [0.0] and funcs[0].term.failures == 1
