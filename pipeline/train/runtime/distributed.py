"""What the ranks of one run must agree on: a barrier, a flag any rank may raise, and collectives that fail with
the rank and the place it waited, instead of hanging forever.

A rank that waits on a collective its peers never join (they disagree on what to broadcast, or one crashed
without closing its sockets) would wait for the process group's time-out: `hw.collective_timeout_s`, set on the
process group by `timeout_args`. `explain_timeouts` turns the backend's bare time-out into a message that names
the rank, the function it waited in and the usual causes.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator

import torch
import torch.distributed as dist

from pipeline.config.derived import rank

log = logging.getLogger(__name__)

# A JIT build takes ~20-60 s on 2 cores; a lock file older than this was left by a killed one.
STALE_BUILD_LOCK_S = 1800
# Frames inside these packages say nothing about *why* a rank waited: the caller above them does.
_PLUMBING = ("torch/distributed", "accelerate/utils/operations.py", "c10d_logger")


class CollectiveTimeout(RuntimeError):
    """A rank waited longer than hw.collective_timeout_s for the others."""


def world() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def barrier() -> None:
    """Every rank waits here until all have arrived (no-op in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def release_shared_memory_names() -> None:
    """Unlink this rank's DeepSpeed CPU all-reduce buffer from /dev/shm once every rank has mapped it.

    DeepSpeed's shm_comm (its CPU all-reduce) creates a 66 MiB /dev/shm file per rank and never unlinks it, so
    every multi-process CPU run kept ~130 MiB of RAM until reboot (hundreds of test runs filled a 24 GiB machine's
    memory). After a barrier every rank has opened every peer's buffer; unlinking the names then frees the memory
    when the processes exit, however they exit.
    """
    comm = sys.modules.get("deepspeed.comm.comm")
    backend = getattr(comm, "cdb", None)
    if getattr(backend, "shm_comm_op", None) is None or world() < 2:
        return
    barrier()
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{dist.get_rank()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join("/dev/shm", name))


def warn_stale_build_locks(max_age_s: float = STALE_BUILD_LOCK_S) -> list[str]:
    """Warn about torch extension build locks older than any build (returned, for the caller and tests).

    DeepSpeed JIT-builds its CPU all-reduce on first use under torch's file lock; a build killed midway leaves the
    lock behind and every later rank waits on it silently, forever. Warned before the wait starts, with the fix.
    """
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    locks = [lock for pattern in ("*/lock", "*/*/lock") for lock in glob.glob(os.path.join(root, pattern))]
    ages = {lock: time.time() - os.path.getmtime(lock) for lock in locks}
    stale = [lock for lock, age in ages.items() if age > max_age_s]
    for lock in stale:
        log.warning("%s is %d min old: a DeepSpeed/torch extension build was killed there and every rank will wait "
                    "on it forever. Fix: stop this run, delete that file (when no other run is building), start "
                    "again.", lock, ages[lock] // 60)
    return stale


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when it is True on at least one: ranks must take the same branch around collectives."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    # NCCL reduces CUDA tensors only; gloo takes CPU ones.
    value = torch.tensor([int(flag)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _is_timeout(err: BaseException) -> bool:
    text = str(err).lower()
    return "timed out" in text or "timeout" in text or "time out" in text


def _where(err: BaseException) -> str:
    """The innermost frame above the collective plumbing: the call that waited."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not any(p in f.filename for p in _PLUMBING)]
    if not frames:
        return "a collective"
    frame = frames[-1]
    parts = frame.filename.replace("\\", "/").split("/")
    return f"{frame.name} ({'/'.join(parts[-2:])}:{frame.lineno})"


@contextlib.contextmanager
def explain_timeouts(timeout_s: int) -> Iterator[None]:
    """Re-raise a collective's time-out as CollectiveTimeout naming the rank and where it waited."""
    try:
        yield
    except Exception as err:
        if not (world() > 1 and _is_timeout(err)):
            raise
        raise CollectiveTimeout(
            f"rank {rank()}/{world()} waited more than hw.collective_timeout_s={timeout_s} s for the other ranks in "
            f"{_where(err)}. The ranks disagree on a collective (one of them failed, or took another branch): "
            f"see the other ranks' output above. Fix the failing rank; raise hw.collective_timeout_s only if a "
            f"rank is legitimately slow (e.g. a long first-time model conversion). Backend: {err}"
        ) from err
