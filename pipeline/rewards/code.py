"""Code execution reward: the completion's last fenced code block runs against the row's tests in a child Python
process with a CPU-time, memory and wall-clock limit and no network.

    reward.terms.tests._target_: pipeline.rewards.code.passes_tests      # data rows carry a `tests` column

`tests` is one script (asserts; score 1 when it runs through, else 0) or a list of test snippets (score = the
fraction that pass). The child gets RLIMIT_CPU / RLIMIT_AS / RLIMIT_FSIZE / no core files, its own session (the
whole process group is killed after the report and at the wall-clock limit, timeout_s: a sleeping loop uses
no CPU), an empty temporary working
directory, an environment without proxies or keys, and a socket module that refuses to connect. Such isolation
stops accidents (an endless loop, a runaway allocation, a stray download); it is not a sandbox against hostile
code: run untrusted models' code in a container.

A completion's code that exits the process itself (sys.exit, os._exit) scores 0: only a report written after
the tests ran counts, and it carries a random token the code cannot know in advance.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from pipeline.rewards.registry import completion_text, register_reward

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3"}

# Runs first in every child: limits, then the network off; it leaves `token` and `job` (the JSON on stdin) for the
# harness after it. pipeline/envs/python_tool.py runs its own harness behind the same prelude.
SANDBOX_PRELUDE = r"""
import json, os, resource, sys
token, cpu_s, memory_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import socket
def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in this sandbox")
socket.socket = socket.create_connection = socket.getaddrinfo = socket.socketpair = _no_network
job = json.loads(sys.stdin.read())
"""

# The reward's harness: the code and each test in one namespace.
_HARNESS = SANDBOX_PRELUDE + r"""
report = sys.stdout
sys.stdout = sys.stderr = open(os.devnull, "w")
namespace = {"__name__": "__main__"}
passed = 0
try:
    exec(compile(job["code"], "<completion>", "exec"), namespace)
    for test in job["tests"]:
        try:
            exec(compile(test, "<test>", "exec"), namespace)
            passed += 1
        except BaseException:
            pass
except BaseException:
    pass
report.write(token + json.dumps({"passed": passed}) + "\n")
report.flush()
os.killpg(0, 9)  # processes the code started hold the output pipe open: end them all, now
"""


def extract_code(text: str) -> str:
    """The last fenced Python (or untagged) code block; the whole text when there is no fence."""
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
    return blocks[-1] if blocks else text


def run_tests(code: str, tests: str | list[str], timeout_s: float = 5.0, memory_mb: int = 512) -> float:
    """Fraction of ``tests`` that pass after ``code`` (a single script counts as one test); 0 on any limit."""
    snippets = [tests] if isinstance(tests, str) else list(tests)
    if not snippets:
        return 0.0
    report = run_sandboxed(_HARNESS, {"code": code, "tests": snippets}, timeout_s, memory_mb).report
    return report["passed"] / len(snippets) if report else 0.0


class Sandboxed(NamedTuple):
    """What a sandboxed child left: its report (None when it wrote none) and whether the wall clock stopped it."""

    report: dict[str, Any] | None
    timed_out: bool


def run_sandboxed(harness: str, job: dict[str, Any], timeout_s: float = 5.0, memory_mb: int = 512) -> Sandboxed:
    """Runs ``harness`` (a script that starts with SANDBOX_PRELUDE) in a limited child with ``job`` as JSON on
    stdin; the report is the JSON object on the line the harness wrote after ``token``."""
    token = secrets.token_hex(16)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory(prefix="reward-code-") as cwd:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", harness, token, str(max(1, round(timeout_s))), str(memory_mb)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd, env=env,
                start_new_session=True)
        except OSError:
            return Sandboxed(None, False)
        try:
            out, _ = proc.communicate(json.dumps(job).encode(), timeout=timeout_s + 0.5)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Sandboxed(None, True)
        finally:
            _kill_group(proc)  # children the code started (a forked loop) die with it
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(token):
            return Sandboxed(json.loads(line[len(token):]), False)
    return Sandboxed(None, False)


@register_reward("passes_tests")
def passes_tests(completions: list[Any], tests: list[Any] | None = None, timeout_s: float = 5.0,
                 memory_mb: int = 512, workers: int = 0, **kwargs: Any) -> list[float | None]:
    """Per completion: the fraction of its row's ``tests`` its last code block passes (time and memory limited;
    ``workers`` processes at once, 0 = one per CPU core)."""
    if tests is None:
        raise ValueError("passes_tests reward needs a 'tests' data column: a test script (asserts) or a list of "
                         "test snippets per row")
    def score(job: tuple[Any, Any]) -> float | None:
        completion, row_tests = job
        if row_tests is None:  # a row without tests: the term does not apply (None, as TRL reads it)
            return None
        return run_tests(extract_code(completion_text(completion)), row_tests, timeout_s, memory_mb)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        return list(pool.map(score, zip(completions, tests, strict=True)))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
