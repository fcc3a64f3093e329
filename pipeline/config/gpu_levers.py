"""The CUDA-only speed levers and their rules: each is refused where it cannot work, with the reason.

    model.attn_implementation  sdpa (default, everywhere) | eager | flash_attention_2 | flex_attention
    hw.liger_kernel            Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy)
    hw.tf32                    TF32 tensor-core matmuls for the fp32 parts (Ampere and newer)
    hw.continuous_batching     GRPO generation through transformers' paged continuous batching (no vLLM)

None of them has been measured on a GPU here (no GPU was lent to this project); docs/scaling.md "GPU levers" says
when each is expected to help. Light imports only: this runs before torch loads.
"""

from __future__ import annotations

import importlib.util

from pipeline.config.enums import Device
from pipeline.config.schema import RunConfig
from pipeline.config.stage_table import stage_spec

ATTENTION = ("sdpa", "eager", "flash_attention_2", "flex_attention")


def lever_problems(cfg: RunConfig) -> list[str]:
    hw, attn = cfg.hw, cfg.model.attn_implementation
    cpu = hw.device != Device.cuda
    problems = []
    if attn not in ATTENTION:
        problems.append(f"model.attn_implementation={attn}: use one of {', '.join(ATTENTION)}.")
    elif attn in ("flash_attention_2", "flex_attention") and cpu:
        problems.append(f"model.attn_implementation={attn} needs CUDA ({attn} kernels are GPU kernels) but "
                        f"hw={hw.name} is {hw.device.value}: use model.attn_implementation=sdpa.")
    elif attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        problems.append("model.attn_implementation=flash_attention_2 needs the flash-attn package: pip install "
                        "flash-attn --no-build-isolation, or use sdpa (which uses flash kernels itself on CUDA).")
    if hw.liger_kernel and cpu:
        problems.append(f"hw.liger_kernel=true needs CUDA (Liger's kernels are Triton GPU kernels) but hw={hw.name} "
                        f"is {hw.device.value}: set hw.liger_kernel=false.")
    elif hw.liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        problems.append("hw.liger_kernel=true needs the liger-kernel package: pip install liger-kernel.")
    if hw.tf32 and cpu:
        problems.append(f"hw.tf32=true needs an Ampere or newer CUDA GPU but hw={hw.name} is {hw.device.value}: "
                        "set hw.tf32=false.")
    if hw.continuous_batching and cpu:
        problems.append(f"hw.continuous_batching=true is a CUDA path (on CPU it measured 2x slower than plain "
                        f"generate, bench/README.md) and hw={hw.name} is {hw.device.value}: set it to false.")
    if hw.continuous_batching and not stage_spec(cfg.stage.name).generates:
        problems.append(f"hw.continuous_batching=true only changes generation while training; "
                        f"stage={cfg.stage.name} does not generate: set hw.continuous_batching=false.")
    return problems
