"""`transformers serve` (the baseline of bench/serve_load.py --vs-transformers) on a free 127.0.0.1 port, on the same
model directory, waited for and always stopped: transformers' own OpenAI-compatible server, with its continuous
batching (paged attention) on, as its docs recommend for several clients."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline.tools.serving.process import STARTUP_S, free_port


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path, continuous: bool = True) -> Iterator[str]:
    """Yields the base URL; the model's id in requests is the directory, as transformers serve names it."""
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    port = free_port()
    batching = "--continuous-batching" if continuous else "--no-continuous-batching"
    with open(log, "w") as out:
        proc = subprocess.Popen([cli, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), batching,
                                 "--device", "cpu", "--dtype", "float32"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
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
