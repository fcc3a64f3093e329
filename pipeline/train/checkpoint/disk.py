"""Disk space and checkpoints: before training, the run dir's free space against what the checkpoints and final/
will take (a warning with the numbers); during training, a failed write (disk full, no permission) ends the run as
a user error after the half-written checkpoint is removed and the previous complete one kept.

A full disk otherwise surfaces as whatever library was writing: safetensors' `SafetensorError ... No space left on
device`, torch.save's `RuntimeError: ... file write failed`, or a plain OSError -- and leaves a checkpoint-N/ that
holds a few JSON files. The estimate: the saved weights (the adapter, or every weight of a full fine-tune), AdamW's
two fp32 moments per trained weight, and the tokenizer files every checkpoint carries.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config.user_errors import UserError
from pipeline.train.checkpoint.resume import checkpoint_root, checkpoints, discard_incomplete, is_complete, step_of

log = logging.getLogger(__name__)

MB = 2**20
# AdamW keeps exp_avg and exp_avg_sq in fp32 for every trained weight.
OPTIMIZER_BYTES_PER_WEIGHT = 8
_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
# How the libraries word them when the OSError itself is not passed on (safetensors, torch.save).
_FULL_TEXT = ("No space left on device", "StorageFull", "Disk quota exceeded", "file write failed")
_DENIED_TEXT = ("Permission denied", "PermissionDenied", "Read-only file system")


class DiskWriteError(UserError, OSError):
    """Writing into the run dir failed (disk full, no permission); the message has the numbers and the fix."""


def free_bytes(path: Path) -> int:
    """Free space of the filesystem that holds `path` (or would: its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _numel(param: Any) -> int:
    return int(getattr(param, "ds_numel", 0) or param.numel())  # ZeRO-3 keeps the full size as ds_numel


def checkpoint_bytes(model: Any, tokenizer: Any) -> tuple[int, int]:
    """Estimated (model bytes, optimizer bytes) of one checkpoint-N/: the saved weights with the tokenizer files
    (what final/ holds too), and the optimizer state."""
    params = list(model.parameters())
    trained = [p for p in params if p.requires_grad]
    adapter = hasattr(model, "peft_config")  # PEFT saves only the adapter's (trained) weights
    saved = sum(_numel(p) * p.element_size() for p in (trained if adapter else params))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    tokenizer_bytes = len(backend.to_str()) if backend is not None else 0
    return saved + tokenizer_bytes, OPTIMIZER_BYTES_PER_WEIGHT * sum(_numel(p) for p in trained)


def needed_bytes(model_bytes: int, optimizer_bytes: int, save_steps: int, max_steps: int, keep: int) -> int:
    """Checkpoints on disk at once (the newest is written before the oldest is rotated away) plus final/."""
    saves = max_steps // save_steps if save_steps > 0 and max_steps > 0 else (keep + 1 if save_steps > 0 else 0)
    at_once = min(saves, keep + 1) if keep > 0 else saves
    return at_once * (model_bytes + optimizer_bytes) + model_bytes


def warn_if_short(run_dir: Path, needed: int) -> bool:
    """Log a warning with the numbers when the run dir's filesystem has less free space than `needed`."""
    free = free_bytes(run_dir)
    if free >= needed:
        return False
    log.warning("disk: this run's checkpoints and final model need about %.0f MB, but only %.0f MB are free in %s; "
                "it will fail when the disk fills (free space, lower checkpoint.keep, raise stage.save_steps, or use "
                "another output_dir)", needed / MB, free / MB, run_dir)
    return True


def write_failure(err: BaseException) -> str | None:
    """'full' or 'denied' when `err` (or its cause) is a failed write, else None."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return "full"
        if isinstance(seen, OSError) and seen.errno in _DENIED:
            return "denied"
        text = str(seen)
        if any(t in text for t in _FULL_TEXT):
            return "full"
        if any(t in text for t in _DENIED_TEXT):
            return "denied"
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def checkpoint_writes(run_dir: Path, estimate: int, partial: Path | None = None) -> Iterator[None]:
    """Around training (and the final save): a failed write removes the incomplete checkpoint (and `partial`, a
    half-saved final/) and becomes a DiskWriteError naming the space needed (the last complete checkpoint's size,
    else `estimate`)."""
    try:
        yield
    except DiskWriteError:
        raise
    except Exception as err:
        kind = write_failure(err)
        if kind is None:
            raise
        complete = [p for p in checkpoints(run_dir) if is_complete(p)]
        discard_incomplete(run_dir, after=step_of(complete[-1]) if complete else -1)
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        kept = f"the last complete checkpoint, {complete[-1].name}, is kept" if complete else "no checkpoint was kept"
        root = checkpoint_root(run_dir)
        if kind == "denied":
            raise DiskWriteError(f"cannot write into {root} ({_first_line(err)}); {kept}. Fix: make {run_dir} "
                                 "writable (or use another output_dir), then resume with resume=auto.") from err
        needed = dir_bytes(complete[-1]) if complete else estimate
        raise DiskWriteError(f"the disk holding {run_dir} is full ({_first_line(err)}); {kept}. "
                             f"{needed / MB:.1f} MB needed, {free_bytes(root) / MB:.1f} MB free in {run_dir}; resume "
                             "with resume=auto after freeing space.") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__
