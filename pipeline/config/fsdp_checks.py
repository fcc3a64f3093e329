"""The rules of zero=fsdp2 (PyTorch's fully_shard, pipeline/train/model/fsdp2.py), checked before anything loads."""

from __future__ import annotations

from pipeline.config.derived import fsdp2, world_size
from pipeline.config.enums import PeftMethod, QuantMethod
from pipeline.config.schema import RunConfig


def fsdp2_problems(cfg: RunConfig, produced: frozenset[str] = frozenset()) -> list[str]:
    if not fsdp2(cfg):
        return []
    zero, problems = cfg.zero, []
    if world_size(cfg) < 2:
        problems.append(f"zero={zero.name} with hw={cfg.hw.name}: FSDP2 shards over several processes and this run "
                        "has one. Pick hw=cpu_2proc or a multi-GPU profile (hw=8xh100), or zero=none.")
    if zero.stage or zero.config_file:
        problems.append(f"zero={zero.name}: zero.stage and zero.config_file are DeepSpeed's; with zero.engine=fsdp2 "
                        "leave them unset (FSDP2 always shards weights, gradients and optimizer states).")
    if zero.offload_optimizer or zero.offload_params:
        problems.append(f"zero={zero.name}: CPU offload is not wired for FSDP2 here. Use zero=zero3_offload.")
    if cfg.quant.method != QuantMethod.none:
        # measured (bitsandbytes 0.50.2, transformers 5.23, 2 CPU ranks, bnb_4bit_quant_storage=float32): the
        # sharded load wraps the packed 4-bit weights as uint8 DTensors of the unpacked shape, and the first forward
        # fails in FSDP2's all-gather ("start (0) + length (256) exceeds dimension size (16)")
        problems.append(f"quant={cfg.quant.method.value} with zero={zero.name}: FSDP2's sharded load cannot shard "
                        "bitsandbytes' packed 4-bit/8-bit weights (they load as uint8 shards of the wrong shape and "
                        "the first forward fails in FSDP2's all-gather). Use zero=zero2 with QLoRA, or quant=none.")
    # a chain's later step starts from the previous step's final/ (`produced`: not written yet), an adapter when LoRA
    earlier_adapter = cfg.init_from in produced and cfg.peft.method == PeftMethod.lora
    if cfg.init_from and (earlier_adapter or _is_adapter(cfg.init_from)):
        problems.append(f"init_from={cfg.init_from} is a LoRA adapter and zero={zero.name} shards the base as it "
                        "loads, so the adapter cannot be merged into it (a LoRA chain's later steps start so). Export "
                        "the run merged first (python -m pipeline.tools.export RUN) and point init_from at that "
                        "folder, or use zero=zero3 (or peft=full for a chain).")
    return problems


def _is_adapter(path: str) -> bool:
    from pathlib import Path

    return (Path(path) / "adapter_config.json").is_file()
