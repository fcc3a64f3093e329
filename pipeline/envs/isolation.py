"""Where a limited tool call runs: a daemon thread, or a child process from a forkserver.

    value = run_in_thread(fn, args, kwargs, timeout_s)              # TimedOut: the call is abandoned
    value = run_in_process(fn, args, kwargs, timeout_s, memory_mb)  # TimedOut: the child is killed

A thread cannot be killed, so the thread runner abandons a hung call at its time limit and lets the daemon thread
finish or die with the process: the run goes on, the CPU a runaway loop burns does not come back. That is the right
trade for I/O-bound or trusted tools and for environment methods, whose state lives in this process. The process
runner kills its child at the limit and can cap its address space: for CPU-bound or untrusted tools given as
module-level functions (the call and its result are pickled). Its children come from a forkserver, never plain fork:
the trainer holds threads and OpenMP state that a forked child would inherit half-locked.
"""

from __future__ import annotations

import multiprocessing
import resource
import threading
from collections.abc import Callable
from typing import Any

_START_TIMEOUT_S = 60  # a forkserver child importing a heavy module on a loaded machine


class TimedOut(Exception):
    """The call ran past its time limit."""


class ChildFailed(Exception):
    """The call raised (or its process died) in the child; the message names what happened."""


def run_in_thread(fn: Callable, args: tuple, kwargs: dict, timeout: float) -> Any:
    """``fn(*args, **kwargs)`` in a fresh daemon thread (a pool would fill with stuck workers), waited ``timeout`` s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # re-raised in the caller's thread, which decides
            box["error"] = e

    worker = threading.Thread(target=target, name=f"tool-{getattr(fn, '__name__', 'call')}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimedOut
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_in_process(fn: Callable, args: tuple, kwargs: dict, timeout: float | None, memory_mb: int | None) -> Any:
    """``fn(*args, **kwargs)`` in a child process, killed after ``timeout`` s; its exception comes back as
    ChildFailed("<type>: <message>")."""
    context = multiprocessing.get_context("forkserver")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_call, args=(sender, fn, args, kwargs, memory_mb), daemon=True)
    child.start()
    sender.close()
    try:
        # the child's start (a fresh interpreter importing the tool's module) is not the tool's time: the limit
        # runs from the child's "started" message
        if not receiver.poll(_START_TIMEOUT_S):
            raise ChildFailed(f"the tool's process did not start within {_START_TIMEOUT_S} s")
        try:
            kind, payload = receiver.recv()
            if kind == "started":
                if not receiver.poll(timeout):
                    raise TimedOut
                kind, payload = receiver.recv()
        except EOFError:
            child.join(1)
            raise ChildFailed(f"the tool's process died without an answer (exit code {child.exitcode}: a memory "
                              f"limit or a crash)") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()
    if kind == "error":
        raise ChildFailed(payload)
    return payload


def _child_call(sender: Any, fn: Callable, args: tuple, kwargs: dict, memory_mb: int | None) -> None:
    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    sender.send(("started", None))
    try:
        value = fn(*args, **kwargs)
    except BaseException as e:
        sender.send(("error", f"{type(e).__name__}: {e}"))
        return
    try:
        sender.send(("ok", value))
    except Exception as e:
        sender.send(("error", f"returned a {type(value).__name__} that cannot be sent back ({e})"))
