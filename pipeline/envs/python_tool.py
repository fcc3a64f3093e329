"""The Python tool: runs a snippet in a child process under the same limits as the `reward=code` reward.

    from pipeline.envs.python_tool import run_python                # 5 s, 512 MB, 4000 characters back
    GRPOTrainer(..., tools=[PythonTool(timeout_s=10).run_python])   # other limits: one instance per setting

The child is pipeline/rewards/code.py's sandbox (SANDBOX_PRELUDE + run_sandboxed): RLIMIT_CPU / RLIMIT_AS /
RLIMIT_FSIZE, no core files, its own session killed at the wall clock, an empty temporary working directory, an
environment without proxies or keys, and a socket module that refuses to connect. What the model gets back is what
the snippet printed (stdout and stderr interleaved), the value of a last bare expression as a REPL would show it,
and the traceback of an exception (only the snippet's own frames). Like the reward, this stops accidents, not a
hostile program: run untrusted models' code in a container.
"""

from __future__ import annotations

from pipeline.rewards.code import SANDBOX_PRELUDE, run_sandboxed

# After the prelude: output captured up to a bound (a print loop cannot fill the pipe or the parent's memory), the
# last bare expression echoed, the snippet's own traceback frames only; the report goes out on the real stdout.
_HARNESS = SANDBOX_PRELUDE + r"""
import ast, linecache, traceback
report = sys.stdout
class _Capped:
    def __init__(self, limit):
        self.limit, self.parts, self.size, self.total = limit, [], 0, 0
    def write(self, text):
        text = str(text)
        self.total += len(text)
        if self.size < self.limit:
            self.parts.append(text[: self.limit - self.size])
            self.size += len(self.parts[-1])
        return len(text)
    def flush(self):
        pass
out = _Capped(job["max_chars"])
sys.stdout = sys.stderr = out
code = job["code"]
linecache.cache["<snippet>"] = (len(code), None, code.splitlines(True), "<snippet>")
namespace = {"__name__": "__main__"}
try:
    tree = ast.parse(code, "<snippet>")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<snippet>", "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<snippet>", "eval"), namespace)
        if value is not None:
            print(repr(value))
except BaseException as e:
    trace = traceback.TracebackException.from_exception(e)
    trace.stack = traceback.StackSummary.from_list([f for f in trace.stack if f.filename == "<snippet>"])
    out.write("".join(trace.format()))
report.write(token + json.dumps({"output": "".join(out.parts), "total": out.total}) + "\n")
report.flush()
os.killpg(0, 9)  # processes the snippet started hold the output pipe open: end them all, now
"""


class PythonTool:
    """A configured Python tool; its bound method ``run_python`` is what TRL's ``tools=`` takes."""

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512, max_output_chars: int = 4_000) -> None:
        if timeout_s <= 0 or memory_mb < 64 or max_output_chars < 1:
            raise ValueError(f"PythonTool needs timeout_s > 0, memory_mb >= 64 (the interpreter itself needs "
                             f"~30 MB) and max_output_chars >= 1; got {timeout_s}, {memory_mb}, {max_output_chars}")
        self.timeout_s, self.memory_mb, self.max_output_chars = timeout_s, memory_mb, max_output_chars

    def run_python(self, code: str) -> str:
        """Run a Python snippet in a fresh interpreter and return what it printed.

        Each call starts from scratch (no variables survive between calls), without network access, with a small
        time and memory budget. The value of a last bare expression is shown, as in a Python shell.

        Args:
            code: The Python source code to run, e.g. "import math\\nprint(math.factorial(20))".

        Returns:
            The printed output (and the traceback if the code raised), or a message saying which limit stopped it.
        """
        if not isinstance(code, str):
            return f"Error: code must be text, got {type(code).__name__}"
        job = {"code": code, "max_chars": self.max_output_chars}
        result = run_sandboxed(_HARNESS, job, self.timeout_s, self.memory_mb)
        if result.timed_out:
            return f"Error: the code was stopped after {self.timeout_s:g} s (wall-clock limit)."
        if result.report is None:
            return (f"Error: the code was stopped before it finished: it ran past the CPU-time limit "
                    f"({max(1, round(self.timeout_s))} s), ran out of memory ({self.memory_mb} MB), or exited the "
                    f"interpreter itself.")
        output, total = result.report["output"], result.report["total"]
        if total > len(output):
            output += f"\n...[output truncated: {total} characters -> {len(output)}]"
        return output if output.strip() else "(the code ran and printed nothing)"


_DEFAULT = PythonTool()
run_python = _DEFAULT.run_python
