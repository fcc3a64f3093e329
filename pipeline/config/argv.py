"""Command-line fix-ups applied before Hydra parses sys.argv."""

from __future__ import annotations

import os
import re

from pipeline.config.derived import rank


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


def rank_argv(argv: list[str]) -> None:
    """Ranks other than 0 neither rewrite .hydra/ nor append to run.log: they log to the console only."""
    if rank() != 0:
        argv.extend(["hydra.output_subdir=null", "hydra/job_logging=stdout"])


# Keys whose value is a comma-separated list of names, as LLaMA-Factory spells it (`dataset=a,b`).
_NAME_LISTS = ("data.dataset=",)


def quote_name_lists(argv: list[str]) -> None:
    """`data.dataset=a,b` reaches Hydra as the string 'a,b'; Hydra would call it an ambiguous sweep and refuse
    it. Under --multirun the commas keep their sweep meaning."""
    if "-m" in argv or "--multirun" in argv:
        return
    for i, arg in enumerate(argv[1:], 1):
        key, _, value = arg.partition("=")
        if f"{key}=" in _NAME_LISTS and "," in value and value[:1] not in ("'", '"', "["):
            argv[i] = f"{key}='{value}'"


# stage.trl.<field>=v (or stage.<step>.trl.<field>=v in a chain): a pass-through dict with no keys declared.
_TRL_KEY = re.compile(r"^stage\.(?:[a-z_]+\.)?trl\.[A-Za-z_][A-Za-z0-9_]*=")


def open_trl_keys(argv: list[str]) -> None:
    """`stage.trl.<field>=value` -> `++stage.trl.<field>=value`: Hydra wants `+` to add a key to the (empty)
    stage.trl dict and refuses `+` when an option file set it already; `++` adds or overrides. The field name is
    checked against TRL during validation (pipeline/config/trl_checks.py)."""
    for i, arg in enumerate(argv[1:], 1):
        if _TRL_KEY.match(arg):
            argv[i] = "++" + arg


def alias_resume_keys(argv: list[str]) -> None:
    """`resume.allow_changes=v` -> `checkpoint.allow_changes=v`: `resume` is a string (auto | PATH), so it cannot
    hold a key of its own; the spelling that reads naturally beside `resume=auto` is accepted on the command line."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.lstrip("+").startswith("resume.allow_changes="):
            argv[i] = "checkpoint.allow_changes=" + arg.partition("=")[2]


def fix_up_argv(argv: list[str]) -> None:
    """Every fix-up, in order: the launcher's --local_rank goes first, credentials are refused before Hydra could
    write them to .hydra/overrides.yaml, and rank_argv's additions come last."""
    from pipeline.config.secrets import refuse_secret_overrides

    for fix_up in (strip_launcher_args, quote_name_lists, open_trl_keys, alias_resume_keys, refuse_secret_overrides,
                   rank_argv):
        fix_up(argv)
