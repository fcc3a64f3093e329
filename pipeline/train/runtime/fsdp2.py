"""A model's FSDP2 state at run time (zero=fsdp2; the sharded load is pipeline/train/model/fsdp2.py)."""

from __future__ import annotations

from typing import Any


def is_fsdp2(model: Any) -> bool:
    """Whether the model was sharded by FSDP2 as it loaded (a PeftModel around one included)."""
    return any(getattr(m, "is_distributed_loading_by_transformers", False) for m in model.modules())


def reshard(model: Any) -> None:
    """Back to the sharded weights after a forward without backward (generation): FSDP2 keeps the groups it does not
    reshard after forward (the root, the LM head's) unsharded, with their whole tensors registered as the module's
    parameters; an optimizer built then, or a checkpoint taken then, would see those instead of the shards."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
