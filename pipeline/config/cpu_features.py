"""Which precision a CPU run trains in, from the CPU's own instruction flags (read at run time: the machines a run
lands on differ, and one machine's measurement says nothing about the next).

With avx512_bf16 or AMX, bf16 matmuls run at several times fp32's rate (AMD EPYC with avx512_bf16, 2 threads: a
2048^2 matmul 618 GFLOP/s in bf16 vs 160 in fp32; SmolLM2's forward + backward 7.6 s vs 15.4 s). Without them
torch emulates bf16 and it is 1.6-1.8x slower than fp32. Stays light: validation imports it before torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config.enums import Device, Precision

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# DeepSpeed's bf16 mode keeps bf16 weights beside fp32 master copies and its own optimizer: unproven on CPU here
ZERO_BF16 = "DeepSpeed's bf16 mode is not proven on CPU ranks (zero profiles stay fp32 there)"
SLOW_BF16 = "bf16 on a CPU without avx512_bf16/AMX is emulated: 1.6-1.8x slower than fp32 (measured, 2 cores)"


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's `flags` line; empty where /proc/cpuinfo does not exist (macOS, Windows)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bf16_flag(flags: frozenset[str]) -> str | None:
    return next((f for f in BF16_FLAGS if f in flags), None)


def choose_precision(device: Device, zero_stage: int, flags: frozenset[str]) -> tuple[Precision, str]:
    """(precision, why) for hw.precision=auto."""
    if device == Device.cuda:
        return Precision.bf16, "bf16 on CUDA (a GPU without bf16 is refused when the model loads: set fp16)"
    if zero_stage:
        return Precision.fp32, f"fp32: {ZERO_BF16}"
    flag = bf16_flag(flags)
    if flag:
        return Precision.bf16, (f"bf16 autocast: this CPU has {flag}; weights, LoRA adapters and optimizer state stay "
                                "fp32, and so does the log-softmax over the LM head's logits")
    return Precision.fp32, f"fp32: this CPU has neither {' nor '.join(BF16_FLAGS)} ({SLOW_BF16})"
