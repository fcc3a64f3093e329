"""User errors: mistakes the user fixes (a bad row, a missing file, an unknown option, a template that drops tools,
a damaged checkpoint, a directory that is not a run...). Each prints one block on stderr -- what, where, the fix --
and ends the command with exit code 2, without a traceback. A bug keeps its traceback, and `HYDRA_FULL_ERROR=1` (or
`logging.level=debug` for a run) shows it for user errors too.

    class DataError(UserError, ValueError): ...     # our error types derive from UserError (no other change)
    with reported(): main()                        # every entry point: run.py and each python -m pipeline.tools.*

Light imports only (hydra's and omegaconf's error types): every process passes through here first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import CompactHydraException, MissingConfigException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    ValidationError,
)

EXIT_CODE = 2
# Set once by the first entry point of a command and inherited by the ranks a launcher starts: whether the user
# asked for tracebacks (HYDRA_FULL_ERROR=1 before we set it ourselves, or logging.level=debug on the command line).
TRACEBACK_ENV = "PIPELINE_TRACEBACK"
RUN_HINT = "logging.level=debug shows the traceback"


class UserError(Exception):
    """Base of the errors whose message is complete for a user: what went wrong, where, and the fix."""


# Hydra's compose errors (unknown option, typo'd key, wrong type) and OmegaConf's value errors in a user's option
# file are user errors too; an OmegaConf attribute error in our own code (ConfigAttributeError) stays a bug.
_THEIRS = (CompactHydraException, MissingMandatoryValue, ValidationError, InterpolationResolutionError)


def is_user_error(err: BaseException) -> bool:
    # `raise SystemExit("message")` is how the tools ended on a bad option before UserError; an int code is a
    # deliberate exit status (128+signal, a rank's code) and passes through.
    return isinstance(err, (UserError, *_THEIRS)) or (isinstance(err, SystemExit) and isinstance(err.code, str))


def user_message(err: BaseException) -> str:
    """The text the user reads: the message itself, with what Hydra and OmegaConf leave implicit made explicit."""
    if isinstance(err, SystemExit):
        return str(err.code)
    if isinstance(err, MissingConfigException):
        return _missing_option(err)
    if isinstance(err, MissingMandatoryValue):
        key = err.full_key or "a key"
        return (f"{key} has no value (??? in its option file). Fix: set it in the option file or on the command "
                f"line ({key}=VALUE).")
    # KeyError's str() quotes its message; ours subclass it (UnknownStageError, UnknownRewardError) for callers
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    cause = err.__cause__
    if isinstance(err, CompactHydraException) and isinstance(cause, ConfigAttributeError | ConfigKeyError):
        # Hydra's own advice (append with +key) is wrong for a typo: the schema has a fixed set of keys
        where = type(cause.parent).__name__ if cause.object_type is None else cause.object_type.__name__
        return (f"{cause.full_key}: no such key in {where}. Fix: check the spelling; `python pipeline/run.py "
                "--cfg job` prints every key.")
    if isinstance(err, CompactHydraException) and cause is not None:
        text += "\n" + str(cause)
    return text


def _missing_option(err: MissingConfigException) -> str:
    # Hydra lists the schema nodes (base_model, ...) among the options: they are not options a user picks.
    group = (err.missing_cfg_file or "").rpartition("/")[0]
    options = [o for o in (err.options or []) if not o.startswith("base_")]
    if not group or not options:
        return str(err)
    name = err.missing_cfg_file.rpartition("/")[2]
    return (f"{group}={name}: no such option (no conf/{group}/{name}.yaml). Fix: one of {', '.join(options)}, "
            "or add your own file there.")


def block(err: BaseException, hint: str = "") -> str:
    """One block: `error: <first line>`, the rest indented, and an optional hint on the last line."""
    first, *rest = user_message(err).strip().splitlines() or [type(err).__name__]
    lines = [f"error: {first}", *(f"  {line}" if line.strip() else "" for line in rest)]
    if hint:
        lines.append(f"  ({hint})")
    return "\n".join(lines) + "\n"


def traceback_wanted(argv: list[str] | None = None) -> bool:
    """The user's choice, fixed by the command's first process (its own env var wins over what we set below)."""
    if TRACEBACK_ENV not in os.environ:
        debug = any(a.lstrip("+") in ("logging.level=debug", "logging.level=DEBUG") for a in (argv or []))
        wanted = os.environ.get("HYDRA_FULL_ERROR") == "1" or debug
        os.environ[TRACEBACK_ENV] = "1" if wanted else "0"
    return os.environ[TRACEBACK_ENV] == "1"


@contextmanager
def reported(argv: list[str] | None = None, debug: bool = False, hint: str = "") -> Iterator[None]:
    """Turn a user error raised inside into its block on stderr and exit code 2 (unless tracebacks are wanted)."""
    traceback_wanted(argv)
    if debug:  # logging.level=debug from an option file: the outer entry point sees it too
        os.environ[TRACEBACK_ENV] = "1"
    # Hydra prints compose errors itself and exits 1 unless HYDRA_FULL_ERROR=1: set, it re-raises them to us.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except BaseException as err:
        if traceback_wanted() or not is_user_error(err):
            raise
        sys.stdout.flush()
        sys.stderr.write(block(err, hint))
        sys.stderr.flush()
        raise SystemExit(EXIT_CODE) from None
