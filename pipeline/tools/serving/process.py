"""A server on 127.0.0.1, started on a free port, waited for, and always stopped: in a child process (the tests and
bench/serve_load.py, which must measure and check the server as users start it), or in a thread serving a model
this process already holds (the harness evaluation)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STARTUP_S = 300  # imports (~8 s) and the model load (SmolLM2's first conversion ~25 s), on 2 busy cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server_process(module: str, *args: str, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `python -m pipeline.tools.<module> ARGS port=<free>` (or a dotted module path, e.g. a test server's);
    yields its base URL (http://127.0.0.1:PORT)."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", module if "." in module else f"pipeline.tools.{module}",
                                 *args, f"port={port}"],
                                env=env or dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
    with healthy(proc, f"http://127.0.0.1:{port}", log) as url:
        yield url


@contextlib.contextmanager
def healthy(proc: subprocess.Popen, url: str, log: Path) -> Iterator[str]:
    """A started server process: waited for until its /health answers, always stopped afterwards."""
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no /health after {STARTUP_S} s:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@contextlib.contextmanager
def served_in_thread(served: Any, startup_s: float = 60.0) -> Iterator[str]:
    """Serve an already loaded model from a thread of this process on a free 127.0.0.1 port; yields the base URL.
    For tools that evaluate a model they hold (python -m pipeline.tools.evaluate RUN harness=...): no second load."""
    import uvicorn

    from pipeline.tools.serving.api import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="harness-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the in-process server on port {port} did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        served.batcher.close()
