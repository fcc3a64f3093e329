"""LLM judge over HTTP: each completion is sent, inside a prompt template, to an OpenAI-compatible chat endpoint
and the number in the reply is its score.

    reward=judge reward.terms.judge.url=http://127.0.0.1:8000/v1 reward.terms.judge.model=NAME

Requests run concurrently (max_concurrency at once, in threads: the standard library's HTTP client, no extra
package), each attempt bounded by timeout_s; a timeout, a connection error, 429 or 5xx is retried with
exponential back-off. A row whose request still fails, or whose reply holds no score in range, is a RowFailure:
the term's on_error scores it 0 (counted, logged) or stops the run. The API key is read from the environment
variable named by api_key_env, when the request is sent; it is never stored in the config.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import string
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.rewards.calls import RowFailure, per_row
from pipeline.rewards.registry import TermKind, completion_text, register_kind, term_field

DEFAULT_PROMPT = (
    "Rate the response to the question from 0 (wrong or useless) to 10 (correct, complete and clear).\n\n"
    "Question:\n{prompt}\n\nReference answer:\n{answer}\n\nResponse:\n{completion}\n\n"
    "Reply with 'Score: N' and nothing else."
)
# The default for data without an `answer` column (open-ended prompts).
DEFAULT_PROMPT_NO_ANSWER = DEFAULT_PROMPT.replace("Reference answer:\n{answer}\n\n", "")
# The number after "score" (Score: 7, score = 7/10), else the reply's first number.
SCORE_AFTER_LABEL = re.compile(r"score\s*(?:is|of|:|=)?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
FIRST_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)")
DEFAULTS = {"timeout_s": 30.0, "max_concurrency": 8, "retries": 2}
RETRY_STATUS = {429, 500, 502, 503, 504}
FIELDS = ("model", "url", "api_key_env", "prompt", "score_regex", "max_score", "timeout_s", "max_concurrency",
          "retries")


class JudgeError(RuntimeError):
    """One row's request or reply failed (after its retries)."""


class Judge:
    """An async reward: one chat request per completion, concurrently; bound kwargs are extra request fields."""

    def __init__(self, term_name: str, term: Any) -> None:
        self.term_name = term_name
        self.url = term_field(term, "url", "").rstrip("/") + "/chat/completions"
        self.model = term_field(term, "model", "")
        self.key_env = term_field(term, "api_key_env", None)
        self.template = term_field(term, "prompt", None)
        regex = term_field(term, "score_regex", None)
        self.patterns = [re.compile(regex)] if regex else [SCORE_AFTER_LABEL, FIRST_NUMBER]
        self.max_score = term_field(term, "max_score", None)
        self.timeout_s = float(term_field(term, "timeout_s", DEFAULTS["timeout_s"]))
        self.retries = int(term_field(term, "retries", DEFAULTS["retries"]))
        # temperature 0: the same completion gets the same score; a short reply is all the parser needs
        self.body = {"temperature": 0.0, "max_tokens": 64, **dict(term_field(term, "kwargs", None) or {})}
        self.pool = ThreadPoolExecutor(int(term_field(term, "max_concurrency", DEFAULTS["max_concurrency"])),
                                       thread_name_prefix=f"judge-{term_name}")

    async def __call__(self, completions: list[Any], prompts: list[Any] | None = None,
                       **columns: Any) -> list[float | RowFailure]:
        n = len(completions)
        prompts = [""] * n if prompts is None else prompts
        rows = [{k: v[i] for k, v in columns.items() if per_row(v, n)} for i in range(n)]
        return list(await asyncio.gather(*(self._score(p, c, row) for p, c, row in
                                           zip(prompts, completions, rows, strict=True))))

    async def _score(self, prompt: Any, completion: Any, row: dict[str, Any]) -> float | RowFailure:
        template = self.template or (DEFAULT_PROMPT if "answer" in row else DEFAULT_PROMPT_NO_ANSWER)
        try:
            text = template.format(**{**row, "prompt": completion_text(prompt),
                                           "completion": completion_text(completion)})
        except KeyError as e:
            return RowFailure(KeyError(f"the judge prompt uses {{{e.args[0]}}} but the data has no such column "
                                       f"(columns: prompt, completion, {', '.join(sorted(row)) or 'none other'})"))
        try:
            return self.parse(await self._ask(text))
        except (JudgeError, OSError, TimeoutError) as e:
            return RowFailure(e)

    async def _ask(self, text: str) -> str:
        loop = asyncio.get_running_loop()
        for attempt in range(self.retries + 1):
            try:
                return await asyncio.wait_for(loop.run_in_executor(self.pool, self._post, text), self.timeout_s)
            except (asyncio.TimeoutError, _Retryable) as e:
                if attempt == self.retries:
                    reason = f"no reply in {self.timeout_s:g} s" if isinstance(e, asyncio.TimeoutError) else str(e)
                    raise JudgeError(f"{self.url}: {reason} after {attempt + 1} attempt(s)") from None
                await asyncio.sleep(min(0.5 * 2**attempt, 8.0))
        raise AssertionError("unreachable")

    def _post(self, text: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": text}], **self.body}
        headers = {"Content-Type": "application/json"}
        if self.key_env:
            headers["Authorization"] = f"Bearer {os.environ[self.key_env]}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:200].decode(errors="replace")
            if e.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code}: {detail}") from None
            raise JudgeError(f"{self.url}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
            raise _Retryable(f"cannot connect or read the reply ({getattr(e, 'reason', e)!r})") from None
        except TimeoutError:
            raise _Retryable(f"no reply in {self.timeout_s:g} s") from None
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"{self.url}: not an OpenAI chat reply: {raw[:200]!r}") from None

    def parse(self, reply: str) -> float:
        """The score in a reply, divided by max_score when set; JudgeError when there is none in range."""
        for pattern in self.patterns:
            found = pattern.search(reply)
            if found:
                value = float(found.group(1))
                break
        else:
            raise JudgeError(f"no score in the judge's reply {reply[:120]!r}")
        if self.max_score is None:
            return value
        if not 0 <= value <= self.max_score:
            raise JudgeError(f"score {value:g} outside [0, {self.max_score:g}] in the reply {reply[:120]!r}")
        return value / self.max_score


class _Retryable(Exception):
    pass


def check(term_name: str, term: Any) -> list[str]:
    key = f"reward.terms.{term_name}"
    problems = []
    url = term_field(term, "url", "")
    if not url.startswith(("http://", "https://")):
        problems.append(f"{key}.url={url!r} is not an http(s) URL: give the endpoint's base, e.g. "
                        f"{key}.url=http://127.0.0.1:8000/v1")
    env = term_field(term, "api_key_env", None)
    if env and not os.environ.get(env):
        problems.append(f"{key}.api_key_env={env}: the environment variable {env} is not set. Fix: export {env}=... "
                        f"before the run (the key is never put in the config), or {key}.api_key_env=null.")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(term_field(term, "prompt", DEFAULT_PROMPT)) if f}
        if "completion" not in fields:
            problems.append(f"{key}.prompt never shows the judge the completion: put {{completion}} in it.")
    except ValueError as e:
        problems.append(f"{key}.prompt is not a valid format string ({e}): fields are {{prompt}}, {{completion}}, "
                        "{answer} or a data column; write a literal brace as {{ or }}.")
    regex = term_field(term, "score_regex", None)
    if regex:
        try:
            if re.compile(regex).groups < 1:
                problems.append(f"{key}.score_regex needs a group around the number, e.g. 'Rating: (\\d+)'.")
        except re.error as e:
            problems.append(f"{key}.score_regex={regex!r} is not a regex ({e}).")
    for field, ok, rule in (("timeout_s", lambda v: v > 0, "> 0"), ("max_concurrency", lambda v: v >= 1, ">= 1"),
                            ("retries", lambda v: v >= 0, ">= 0"), ("max_score", lambda v: v > 0, "> 0")):
        value = term_field(term, field, None)
        if value is not None and not ok(value):
            problems.append(f"{key}.{field}={value} must be {rule}.")
    return problems


register_kind("judge", TermKind(
    build=Judge, check=check, fields=FIELDS, required=("url", "model"),
    example="set reward.terms.{term}.url=http://HOST:PORT/v1 and reward.terms.{term}.model=NAME "
            "(an OpenAI-compatible chat endpoint and the model it serves).",
))
