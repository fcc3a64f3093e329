"""A server in a child process on 127.0.0.1: started on a free port, waited for, and always stopped. For the tests
and bench/serve_load.py, which must measure and check the server as users start it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

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
    url = f"http://127.0.0.1:{port}"
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
