"""Command-line fix-ups applied before Hydra parses sys.argv."""

from __future__ import annotations

import os


def strip_launcher_args(argv: list[str]) -> None:
    """Move `--local_rank=N` / `--local_rank N` (appended by the deepspeed launcher) into LOCAL_RANK.

    Hydra rejects unknown flags ("unrecognized arguments: --local_rank=0"), and the value is already what
    torch.distributed reads from the environment.
    """
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--local_rank=") or arg.startswith("--local-rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
            del argv[i]
        elif arg in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            del argv[i : i + 2]
        else:
            i += 1
