"""Limits and faults for tools: a time limit per call, output cut to `max_output_tokens`, a cap on calls per episode,
and every fault (raise, hang, garbage return, bad arguments) turned into a message in the model's trajectory and
counted per tool, so a bad tool never stops a run.

    stats = ToolStats()
    tools = [limit_tool(calculate, ToolLimits(timeout_s=5, max_output_tokens=256), stats, tokenizer)]
    Env = limit_environment(GuessNumber, ToolLimits(max_calls_per_episode=8), stats)  # its tool methods wrapped
    stats.metrics()  # {"tools/calculate/calls": 3.0, "tools/calculate/failures": 1.0, ...}

A wrapped tool keeps the name, signature and docstring TRL and transformers read to build its JSON schema. A fault
raises ToolError by default (`on_error="raise"`): TRL's loop catches it, shows the model `{'error': '<message>'}`
and counts it in its own `tools/failure_frequency`, so both counts agree; `on_error="return"` returns
"Error: <message>" instead, for callers outside TRL's loop.

Isolation (pipeline/envs/isolation.py): `thread` (default; trusted or I/O-bound tools and environment methods)
abandons a hung call at its limit; `process` (module-level CPU-bound or untrusted tools) kills it.

The per-episode cap counts calls per environment instance between two `reset()`s (TRL makes one instance per
rollout); plain `tools=` functions have no episode, so `tools_environment` turns them into one when a cap is set.
TRL's `max_tool_calling_iterations` bounds turns; this also bounds several calls in one turn.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import pickle
import threading
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pipeline.envs.isolation import ChildFailed, TimedOut, run_in_process, run_in_thread
from pipeline.envs.output import as_text, is_content_blocks, truncate

_EPISODE_CALLS = "_pipeline_tool_calls"  # per-instance counter, set on the environment by its wrapped reset()
_MAX_ERROR_CHARS = 1_000


class ToolError(RuntimeError):
    """A tool call that failed; the message is what the model sees."""


@dataclass(frozen=True)
class ToolLimits:
    """What one tool call may take. None turns a limit off."""

    timeout_s: float | None = 10.0
    max_output_tokens: int | None = 512  # characters when no tokenizer is given
    isolation: Literal["thread", "process"] = "thread"
    memory_mb: int | None = None  # address-space cap, process isolation only
    max_calls_per_episode: int | None = None  # environments (and tools_environment) only
    on_error: Literal["raise", "return"] = "raise"

    def __post_init__(self) -> None:
        for key in ("timeout_s", "max_output_tokens", "memory_mb", "max_calls_per_episode"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"ToolLimits.{key} must be a positive number or null (off), got {value!r}")
        if self.isolation not in ("thread", "process"):
            raise ValueError(f"ToolLimits.isolation must be 'thread' or 'process', got {self.isolation!r}")
        if self.on_error not in ("raise", "return"):
            raise ValueError(f"ToolLimits.on_error must be 'raise' or 'return', got {self.on_error!r}")
        if self.memory_mb is not None and self.isolation != "process":
            raise ValueError("ToolLimits.memory_mb needs isolation='process' (a thread shares this process's memory)")


@dataclass
class ToolCounts:
    calls: int = 0
    failures: int = 0
    timeouts: int = 0  # also counted in failures
    truncated: int = 0


class ToolStats:
    """Per-tool counters, shared by every wrapped tool and environment instance of a run (thread-safe)."""

    def __init__(self) -> None:
        self._counts: dict[str, ToolCounts] = {}
        self._lock = threading.Lock()

    def record(self, name: str, failed: bool = False, timed_out: bool = False, truncated: bool = False) -> None:
        with self._lock:
            counts = self._counts.setdefault(name, ToolCounts())
            counts.calls += 1
            counts.failures += failed or timed_out
            counts.timeouts += timed_out
            counts.truncated += truncated

    def __getitem__(self, name: str) -> ToolCounts:
        with self._lock:
            return ToolCounts(**asdict(self._counts.get(name, ToolCounts())))

    def summary(self) -> dict[str, dict[str, int]]:
        """{tool: {calls, failures, timeouts, truncated}}, totals since the start: summary.json's `tools`."""
        with self._lock:
            return {name: asdict(counts) for name, counts in sorted(self._counts.items())}

    def metrics(self, prefix: str = "tools") -> dict[str, float]:
        """`<prefix>/<tool>/calls|failures|timeouts|truncated`, totals since the start, for a logger."""
        with self._lock:
            return {f"{prefix}/{name}/{key}": float(value) for name, counts in sorted(self._counts.items())
                    for key, value in asdict(counts).items()}


def limit_tool(tool: Callable, limits: ToolLimits | None = None, stats: ToolStats | None = None,
               tokenizer: Any = None) -> Callable:
    """``tool`` under ``limits``, counted in ``stats`` (the wrapper's ``.stats``); same name, signature, docstring."""
    return _Guard(tool, limits or ToolLimits(), stats, tokenizer).wrapper()


def limit_environment(env_cls: type, limits: ToolLimits | None = None, stats: ToolStats | None = None,
                      tokenizer: Any = None, extra_tools: Sequence[Callable] = ()) -> type:
    """A subclass of ``env_cls`` (same name, so TRL's reward column keeps it) whose tool methods (public, other than
    reset/get_reward) run under ``limits``; ``extra_tools`` (plain functions) become tool methods too."""
    limits, stats = limits or ToolLimits(), stats if stats is not None else ToolStats()
    if not callable(getattr(env_cls, "reset", None)):
        raise ValueError(f"{env_cls.__qualname__} has no reset() method; TRL needs one on every environment")
    namespace: dict[str, Any] = {}
    for name, fn in inspect.getmembers(env_cls, predicate=inspect.isfunction):
        if not name.startswith("_") and name not in ("reset", "get_reward"):
            namespace[name] = _Guard(fn, limits, stats, tokenizer, method=True, owner_first=True).wrapper()
    for tool in extra_tools:  # `self` first, so the episode cap sees the instance
        namespace[tool.__name__] = _as_method(_Guard(tool, limits, stats, tokenizer, owner_first=True).wrapper(), tool)
    original_reset = env_cls.reset

    @functools.wraps(original_reset)
    def reset(self: Any, *args: Any, **kwargs: Any) -> Any:
        setattr(self, _EPISODE_CALLS, 0)
        return original_reset(self, *args, **kwargs)

    namespace.update(reset=reset, __module__=env_cls.__module__, __qualname__=env_cls.__qualname__,
                     __doc__=env_cls.__doc__, tool_stats=stats)
    return type(env_cls.__name__, (env_cls,), namespace)


def tools_environment(tools: Sequence[Callable], limits: ToolLimits | None = None, stats: ToolStats | None = None,
                      tokenizer: Any = None) -> type:
    """Plain tools as an environment class (pass it as `environment_factory`): one instance per rollout, so
    ``limits.max_calls_per_episode`` holds for tools that have no state of their own."""

    class ToolBox:
        """Standalone tools, one instance per rollout."""

        def reset(self, **row: Any) -> None:
            return None

    return limit_environment(ToolBox, limits, stats, tokenizer, extra_tools=tools)


class _Guard:
    """One tool's limits: argument check, episode cap, the call (direct, thread or process), result to text."""

    def __init__(self, fn: Callable, limits: ToolLimits, stats: ToolStats | None, tokenizer: Any,
                 method: bool = False, owner_first: bool = False):
        # method: fn takes the environment as `self`; owner_first: the wrapper's first argument is the environment
        self.fn, self.limits, self.tokenizer, self.method, self.owner_first = fn, limits, tokenizer, method, owner_first
        self.stats = stats if stats is not None else ToolStats()
        self.name = getattr(fn, "__name__", None)
        if not self.name or not callable(fn):
            raise ValueError(f"a tool must be a named function or method, got {fn!r}")
        self.signature = inspect.signature(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        if limits.isolation == "process":
            if method or self.is_async:
                raise ValueError(f"tool {self.name}: isolation='process' is for plain module-level functions; an "
                                 f"environment method or async tool keeps state in this process: use 'thread'")
            try:
                pickle.dumps(fn)
            except Exception as e:
                raise ValueError(f"tool {self.name}: isolation='process' needs a module-level function that can be "
                                 f"pickled ({e}); define it at module level or use isolation='thread'") from None

    def wrapper(self) -> Callable:
        if self.is_async:
            @functools.wraps(self.fn)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                refusal, args = self._refusal(args, kwargs)
                if refusal is not None:
                    return self._fail(refusal)
                try:
                    value = await asyncio.wait_for(self.fn(*args, **kwargs), self.limits.timeout_s)
                except asyncio.TimeoutError:
                    return self._fail(f"{self.name} timed out after {self.limits.timeout_s:g} s", timed_out=True)
                except Exception as e:
                    return self._fail(f"{self.name} failed: {type(e).__name__}: {e}")
                return self._finish(value)
            call_async.stats = self.stats
            return call_async

        @functools.wraps(self.fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            refusal, args = self._refusal(args, kwargs)
            if refusal is not None:
                return self._fail(refusal)
            try:
                value = self._run(args, kwargs)
            except TimedOut:
                how = "was stopped" if self.limits.isolation == "process" else "was abandoned"
                return self._fail(f"{self.name} timed out after {self.limits.timeout_s:g} s and {how}", timed_out=True)
            except ChildFailed as e:
                return self._fail(f"{self.name} failed: {e}")
            except (Exception, SystemExit) as e:  # KeyboardInterrupt still stops the run
                return self._fail(f"{self.name} failed: {type(e).__name__}: {e}")
            return self._finish(value)
        call.stats = self.stats
        return call

    def _refusal(self, args: tuple, kwargs: dict) -> tuple[str | None, tuple]:
        """Why the call is refused (None: it is not), and the arguments fn itself takes."""
        owner = args[0] if self.owner_first and args else None
        if self.owner_first and not self.method:
            args = args[1:]
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as e:
            shown = self.signature.replace(parameters=[
                p for p in self.signature.parameters.values() if not (self.method and p.name == "self")])
            return f"bad arguments for {self.name}{shown}: {e}; got {json.dumps(kwargs, default=repr)[:200]}", args
        cap = self.limits.max_calls_per_episode
        if owner is not None and cap is not None:
            used = getattr(owner, _EPISODE_CALLS, 0) + 1
            setattr(owner, _EPISODE_CALLS, used)
            if used > cap:
                return f"the tool-call limit of this episode is reached ({cap} calls); answer without tools", args
        return None, args

    def _run(self, args: tuple, kwargs: dict) -> Any:
        timeout = self.limits.timeout_s
        if self.limits.isolation == "process":
            return run_in_process(self.fn, args, kwargs, timeout, self.limits.memory_mb)
        if timeout is None:
            return self.fn(*args, **kwargs)
        return run_in_thread(self.fn, args, kwargs, timeout)

    def _finish(self, value: Any) -> Any:
        if is_content_blocks(value):  # TRL's multimodal tool result (text and image parts): passed through
            self.stats.record(self.name)
            return value
        text = as_text(value)
        if text is None:
            return self._fail(f"{self.name} returned a {type(value).__name__} object, not text or JSON")
        text, truncated = truncate(text, self.limits.max_output_tokens, self.tokenizer)
        self.stats.record(self.name, truncated=truncated)
        return text

    def _fail(self, message: str, timed_out: bool = False) -> str:
        message, _ = truncate(message, _MAX_ERROR_CHARS)  # an exception can carry megabytes too
        self.stats.record(self.name, failed=True, timed_out=timed_out)
        if self.limits.on_error == "raise":
            raise ToolError(message)
        return f"Error: {message}"


def _as_method(wrapper: Callable, tool: Callable) -> Callable:
    """A guarded plain tool as a method: `self` first in its signature, so a bound method still shows every
    argument, and its hints resolved here (strings would otherwise resolve in this module)."""
    signature = inspect.signature(tool)
    wrapper.__signature__ = signature.replace(
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *signature.parameters.values()])
    wrapper.__annotations__ = typing.get_type_hints(tool)
    return wrapper
