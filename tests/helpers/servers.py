"""The server under test: a real child process on 127.0.0.1, offline, one OpenMP thread (2 shared cores)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pipeline.tools.serving.process import server_process
from tests.helpers.runs import offline_env


@contextlib.contextmanager
def server(module: str, *args: str, log: Path, **env: str) -> Iterator[str]:
    with server_process(module, *args, log=log, env=offline_env(OMP_NUM_THREADS="1", **env)) as url:
        yield url
