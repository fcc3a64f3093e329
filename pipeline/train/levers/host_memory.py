"""Whether a generation lever's weight copies fit in this machine's memory (levers/merged_lora.py,
levers/packed_linears.py): each holds one more copy of the weights it touches while generating, 0.5 GB for
SmolLM2-135M but 28 GB for a 7B model in fp32, so a copy that would take more than half of what the kernel
reports available is not made and the lever says so once; generation then runs without it (slower, the same tokens).
"""

from __future__ import annotations

import logging

from pipeline.train.trl_surface import reached

log = logging.getLogger(__name__)


def copies_fit(nbytes: int, lever: str) -> bool:
    """Whether `nbytes` of copies for `lever` take at most half the memory available now (True where it cannot be
    read); logged once per lever when they do not."""
    available = available_memory()
    if available is None or nbytes <= available // 2:
        return True
    if not reached[f"{lever}: memory"]:
        log.info("generation: %s skipped: its weight copies would take %.1f GB, more than half the %.1f GB "
                 "available", lever, nbytes / 2**30, available / 2**30)
    reached[f"{lever}: memory"] += 1
    return False


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
