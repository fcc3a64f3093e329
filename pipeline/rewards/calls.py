"""Config terms made callable: `build_reward_funcs` binds each term (its function and kwargs, or a kind built from
its fields) into the wrapper TRL's GRPOTrainer (and eval, sample, score) calls, sync or async like the function it
wraps, which names the term and the row when a score cannot be computed; `call_terms` / `score_completions` score a
batch with every term outside a trainer, async ones concurrently.

A function that raises on a batch is called again row by row to find the rows that fail; a term kind that fails
on single rows (a judge request that times out) returns `RowFailure` for them. Either way the term's on_error
decides: stop raises RewardError naming the term, the row and the error; zero scores those rows 0, counts them
(`failures` on the wrapper, rewards/<term>/failures in the logs) and logs a warning.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import numbers
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.config.user_errors import UserError
from pipeline.rewards.registry import (
    KINDS,
    RewardFunc,
    completion_text,
    get_reward,
    term_field,
    term_function,
    term_problems,
)

log = logging.getLogger(__name__)


def build_reward_funcs(terms: Mapping[str, Any]) -> tuple[list[RewardFunc], list[float]]:
    """One bound reward function per term (named after the term, sync or async like the function it wraps) and
    the matching weights. Terms of a kind (judge, reward_model) are built from their fields by that kind."""
    funcs: list[RewardFunc] = []
    weights: list[float] = []
    for term_name, term in terms.items():
        function = term_function(term_name, term)
        bound = dict(term_field(term, "kwargs", None) or {})
        if function in KINDS:
            problems = term_problems(term_name, term)
            if problems:
                raise ValueError("; ".join(problems))
            fn, bound = KINDS[function].build(term_name, term), {}
        else:
            fn = get_reward(function)
            _check_kwargs(term_name, function, fn, bound)
        funcs.append(bind(term_name, fn, bound, str(_enum_value(term_field(term, "on_error", "stop")))))
        weights.append(float(term_field(term, "weight", 1.0)))
    return funcs, weights


def score_completions(funcs: list[RewardFunc], weights: list[float], prompts: list[Any], texts: list[str],
                      columns: Mapping[str, list[Any]]) -> tuple[dict[str, list[float | None]], list[float]]:
    """(per term scores, weighted totals) of completion texts, calling each bound term as TRL's GRPOTrainer does:
    conversational completions (one assistant turn), the prompts, and every data column as keyword arguments;
    async terms run concurrently. A None or NaN score (a term that does not apply) counts 0 in the total, as in
    TRL's nansum."""
    turns = [[{"role": "assistant", "content": text}] for text in texts]
    per_term = call_terms(funcs, prompts=prompts, completions=turns, **columns)
    totals = [sum(w * _counted(scores[i]) for w, scores in zip(weights, per_term.values(), strict=True))
              for i in range(len(texts))]
    return per_term, totals


class RewardError(UserError, RuntimeError):
    """A reward term could not score its batch: names the term, the row and the cause."""


class RewardSetupError(RewardError):
    """A term cannot score any row (its model does not load): raised at once, never retried row by row."""


class RowFailure:
    """The score of one row that could not be computed (returned in place of a number by term kinds)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"RowFailure({self.error!r})"


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine (a function or a callable object), as TRL decides it."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def bind(term_name: str, fn: RewardFunc, bound: dict[str, Any], on_error: str) -> RewardFunc:
    """``fn`` under the term's name with its config kwargs bound; async when ``fn`` is, so TRL awaits it."""
    term = _Term(term_name, fn, bound, on_error)
    if is_async(fn):
        async def reward(*args: Any, **kwargs: Any) -> list[float | None]:
            return await term.acall(_keywords(args, kwargs))
    else:
        def reward(*args: Any, **kwargs: Any) -> list[float | None]:
            return term.call(_keywords(args, kwargs))

    reward.__name__ = reward.__qualname__ = term_name
    reward.term = term  # type: ignore[attr-defined]  # failures, and the scorer itself (reward models move device)
    return reward


def call_terms(funcs: list[RewardFunc], **kwargs: Any) -> dict[str, list[float | None]]:
    """Every term's scores for one batch, by term name; async terms are awaited concurrently, as TRL does."""
    waiting = [f for f in funcs if is_async(f)]
    scores = {f.__name__: f(**kwargs) for f in funcs if not is_async(f)}
    if waiting:
        async def gather() -> list[list[float | None]]:
            return await asyncio.gather(*(f(**kwargs) for f in waiting))

        scores.update(zip((f.__name__ for f in waiting), run_coroutine(gather), strict=True))
    return {f.__name__: scores[f.__name__] for f in funcs}


def run_coroutine(make: Callable[[], Any]) -> Any:
    """Run the coroutine ``make()`` to the end from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _keywords(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    # Reward functions take completions first; TRL passes everything by keyword, tests and users may not.
    if len(args) > 1:
        raise TypeError("reward terms take completions as their only positional argument, the rest by keyword")
    return {"completions": args[0], **kwargs} if args else kwargs


class _Term:
    def __init__(self, name: str, fn: RewardFunc, bound: dict[str, Any], on_error: str) -> None:
        self.name, self.fn, self.bound, self.on_error = name, fn, bound, on_error
        # rows scored 0 by on_error=zero, rows scored and seconds spent (wall clock, concurrency included)
        self.failures, self.rows, self.seconds = 0, 0, 0.0

    def call(self, kwargs: dict[str, Any]) -> list[float | None]:
        n, start = len(kwargs["completions"]), time.perf_counter()
        try:
            scores = self.fn(**{**kwargs, **self.bound})  # config-bound kwargs win over a same-named data column
        except RewardSetupError:
            raise
        except Exception as batch_error:
            scores = [self._one_row(kwargs, i, n) for i in range(n)]
            scores = self._batch_only(scores, batch_error)
        return self._settle(scores, kwargs, n, start)

    async def acall(self, kwargs: dict[str, Any]) -> list[float | None]:
        n, start = len(kwargs["completions"]), time.perf_counter()
        try:
            scores = await self.fn(**{**kwargs, **self.bound})
        except RewardSetupError:
            raise
        except Exception as batch_error:
            scores = list(await asyncio.gather(*(self._one_row_async(kwargs, i, n) for i in range(n))))
            scores = self._batch_only(scores, batch_error)
        return self._settle(scores, kwargs, n, start)

    def _one_row(self, kwargs: dict[str, Any], i: int, n: int) -> Any:
        try:
            return self.fn(**_row(kwargs, i, n), **self.bound)[0]
        except Exception as e:
            return RowFailure(e)

    async def _one_row_async(self, kwargs: dict[str, Any], i: int, n: int) -> Any:
        try:
            return (await self.fn(**_row(kwargs, i, n), **self.bound))[0]
        except Exception as e:
            return RowFailure(e)

    @staticmethod
    def _batch_only(scores: list[Any], batch_error: Exception) -> list[Any]:
        # Every row scores alone but the batch raised: the batch is what fails, so every row carries its error.
        if any(isinstance(s, RowFailure) for s in scores):
            return scores
        return [RowFailure(batch_error)] * len(scores)

    def _settle(self, scores: Any, kwargs: dict[str, Any], n: int, start: float) -> list[float | None]:
        self.rows, self.seconds = self.rows + n, self.seconds + time.perf_counter() - start
        if not isinstance(scores, (list, tuple)) or len(scores) != n:
            got = f"{len(scores)} scores" if isinstance(scores, (list, tuple)) else f"a {type(scores).__name__}"
            raise RewardError(f"reward term {self.name!r} returned {got} for {n} completions: a reward function "
                              "returns a list with one float (or None) per completion.")
        failed = [(i, s.error) for i, s in enumerate(scores) if isinstance(s, RowFailure)]
        failed += [(i, TypeError(f"score {s!r} is not a number")) for i, s in enumerate(scores)
                   if not isinstance(s, RowFailure) and not _is_score(s)]
        if failed and self.on_error != "zero":
            i, error = failed[0]
            where = (f"the batch of {n} completions (each row alone scores)" if n > 1 and len(failed) == n
                     and all(e is error for _, e in failed) else f"row {i} of {n} ({_describe(kwargs, i)})")
            raise RewardError(f"reward term {self.name!r} failed on {where}: "
                              f"{type(error).__name__}: {error}. Fix the reward, or set "
                              f"reward.terms.{self.name}.on_error=zero to score such rows 0.") from error
        if self.on_error == "zero":
            self._count(failed, kwargs, n)
        bad = {i for i, _ in failed}
        return [0.0 if i in bad else (None if s is None else float(s)) for i, s in enumerate(scores)]

    def _count(self, failed: list[tuple[int, BaseException]], kwargs: dict[str, Any], n: int) -> None:
        self.failures += len(failed)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):  # TRL's hook: averaged per logging step like its own metrics
            log_metric(f"rewards/{self.name}/failures", float(len(failed)))
        if failed:
            i, error = failed[0]
            log.warning("reward term %r: %d of %d rows failed and score 0 (on_error=zero; %d so far); first: row %d "
                        "(%s): %s: %s", self.name, len(failed), n, self.failures, i, _describe(kwargs, i),
                        type(error).__name__, error)


def _counted(score: float | None) -> float:
    return 0.0 if score is None or math.isnan(score) else score


def _is_score(value: Any) -> bool:
    # NaN is TRL's "does not apply", like None; an infinite reward would swamp every advantage
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isinf(value))


def per_row(value: Any, n: int) -> bool:
    """Whether ``value`` holds one entry per completion (a list, or a `datasets` column, of n) rather than being
    shared by the batch (trainer_state, log_metric...)."""
    return (not isinstance(value, (str, bytes, Mapping)) and hasattr(value, "__getitem__")
            and hasattr(value, "__len__") and len(value) == n)


def _row(kwargs: dict[str, Any], i: int, n: int) -> dict[str, Any]:
    return {k: [v[i]] if per_row(v, n) else v for k, v in kwargs.items()}


def _describe(kwargs: dict[str, Any], i: int) -> str:
    parts = []
    for key in ("prompts", "completions"):
        values = kwargs.get(key)
        if values is not None and per_row(values, len(kwargs["completions"])):
            text = completion_text(values[i])
            parts.append(f"{key[:-1]} {text[:80] + ('...' if len(text) > 80 else '')!r}")
    return ", ".join(parts) or "no prompt or completion given"


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def _check_kwargs(term_name: str, function: str, fn: RewardFunc, bound: dict[str, Any]) -> None:
    # Reward functions swallow unknown kwargs (TRL passes every dataset column), so a typo in a
    # config kwarg would otherwise be silently ignored.
    params = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "completions"
    ]
    unknown = sorted(set(bound) - set(params))
    if unknown:
        raise ValueError(
            f"reward.terms.{term_name}.kwargs: reward {function!r} has no parameter(s) "
            f"{', '.join(unknown)}; it accepts: {', '.join(params) or '(none)'}"
        )
