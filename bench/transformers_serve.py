"""`transformers serve` (the baseline of bench/serve_load.py --vs-transformers) on a free 127.0.0.1 port, on the same
model directory, waited for and always stopped: transformers' own OpenAI-compatible server, with its continuous
batching (paged attention) on, as its docs recommend for several clients."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pipeline.tools.serving.process import free_port, healthy


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path, continuous: bool = True) -> Iterator[str]:
    """Yields the base URL; the model's id in requests is the directory, as transformers serve names it."""
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    port = free_port()
    batching = "--continuous-batching" if continuous else "--no-continuous-batching"
    with open(log, "w") as out:
        proc = subprocess.Popen([cli, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), batching,
                                 "--device", "cpu", "--dtype", "float32"], stdout=out, stderr=subprocess.STDOUT)
    with healthy(proc, f"http://127.0.0.1:{port}", log) as url:
        yield url
