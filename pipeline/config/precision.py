"""Which precision a run trains in (hw.precision=auto resolved, and the combinations refused): on CPU from its own
instruction flags (read at run time: the machines a run
lands on differ, and one machine's measurement says nothing about the next).

With avx512_bf16 or AMX, bf16 matmuls run at several times fp32's rate (AMD EPYC with avx512_bf16, 2 threads: a
2048^2 matmul 618 GFLOP/s in bf16 vs 160 in fp32; SmolLM2's forward + backward 7.6 s vs 15.4 s). Without them
torch emulates bf16 and it is 1.6-1.8x slower than fp32. Stays light: validation imports it before torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config.derived import rank
from pipeline.config.enums import Device, Precision

if TYPE_CHECKING:
    from pipeline.config.schema import RunConfig

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


def resolve_auto(cfg: RunConfig) -> None:
    """hw.precision=auto becomes what this machine has, said once (rank 0); downstream sees only fp32/bf16/fp16."""
    if cfg.hw.precision == Precision.auto:
        cfg.hw.precision, why = choose_precision(cfg.hw.device, cfg.zero.stage, cpu_flags())
        if rank() == 0:
            log.info("hw.precision=auto -> %s", why)


def precision_problems(cfg: RunConfig) -> list[str]:
    hw = cfg.hw
    if hw.device != Device.cpu or hw.precision == Precision.fp32:
        return []
    if hw.precision == Precision.bf16 and bf16_flag(cpu_flags()) and not cfg.zero.stage:
        return []
    why = "fp16 autocast is a GPU feature"
    if hw.precision == Precision.bf16:
        why = ZERO_BF16 if cfg.zero.stage else SLOW_BF16
    return [f"hw.precision={hw.precision.value} with hw.device=cpu (hw={hw.name}): {why}. Fix: hw.precision=auto "
            "(bf16 where the CPU has it, else fp32) or fp32, or pick a GPU profile."]
