"""FSDP2 loading (zero=fsdp2): the model is sharded as it loads, each rank reading only its rows of every weight.

accelerate's FSDP plugin does not reach CPU ranks (a MULTI_CPU accelerator ignores it and the Trainer would run plain
DDP), so the sharding happens where the weights load: `from_pretrained(distributed_config=DistributedConfig(
fsdp_size=N))` applies `fully_shard` to each decoder layer and the root over the N ranks, and every rank reads only
its own slice of each tensor from the safetensors files. The Trainer then sees a model "sharded at load time": it
neither wraps it in DDP nor shards it again; a LoRA adapter the trainer attaches afterwards stays a replicated plain
tensor (the Trainer broadcasts it from rank 0 and averages its gradients). The same call shards on GPUs.

The Trainer refuses to checkpoint such a model's optimizer, so the run saves it itself (checkpoint/fsdp2.py).
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from pipeline.config.derived import fsdp2, world_size
from pipeline.config.schema import RunConfig


def fsdp2_load_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """`from_pretrained` keyword arguments that shard the model over the ranks as it loads ({} unless FSDP2 and
    inside the ranks' process group: TrainingArguments start it, stages/prepare.py builds them first). A tool that
    loads an FSDP2 run's base back (export, evaluate: one process) gets the plain model."""
    import torch.distributed as dist

    if not fsdp2(cfg) or not dist.is_initialized() or dist.get_world_size() < 2:
        return {}
    from transformers.distributed import DistributedConfig

    return {"distributed_config": DistributedConfig(fsdp_size=world_size(cfg))}


def fsdp2_share(model: PreTrainedModel) -> tuple[int, int]:
    """(weight elements this rank holds, elements of the whole model) of an FSDP2 model: each sharded weight is a
    DTensor whose local tensor is this rank's rows; a replicated one (a LoRA adapter) counts whole on both sides."""
    from torch.distributed.tensor import DTensor

    held = total = 0
    for param in model.parameters():
        local = param.to_local() if isinstance(param, DTensor) else param
        held, total = held + local.numel(), total + param.numel()
    return held, total


def accept_full_state_dicts(model: Any) -> None:
    """Let `model.load_state_dict` take whole tensors (the Trainer's resume and `load_finished` read the gathered
    model.safetensors of a checkpoint): each becomes this rank's shard of the DTensor it replaces, cut locally
    (every rank read the whole file, so no communication). Without it: "aten.copy_.default got mixed torch.Tensor
    and DTensor". Tied weights count under each name (the state dict holds lm_head.weight beside the embedding)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    def to_shards(module: Any, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name, param in module.named_parameters(prefix=prefix.rstrip("."), remove_duplicate=False):
            value = state_dict.get(name)
            if isinstance(param, DTensor) and value is not None and not isinstance(value, DTensor):
                state_dict[name] = distribute_tensor(value.to(param.dtype), param.device_mesh, param.placements,
                                                     src_data_rank=None)

    model.register_load_state_dict_pre_hook(to_shards)
