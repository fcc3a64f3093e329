"""The shared-prefix layout through FlexAttention: the packed rows' mask as a block mask, not a dense 4-D one.

The packed rows (`prefix_mask.pack_branches`) say which segment each position is in: the shared prompt, one
completion, or padding. `prefix_mask.visible` turns two positions and their segments into "may attend"; here that
same rule is FlexAttention's `mask_mod`, so the block mask and the dense (N, 1, L, L) mask of the SDPA path are one
mask in two forms (tests/train/levers/test_prefix_flex.py checks them element by element and the log-probs, TRL's
loss and the gradients against the 4-D path and TRL's per-row path). A block mask holds per-block indices (O(L))
where the dense mask holds L² entries per packed row, and FlexAttention skips the blocks no query sees: on CUDA the
packed rows stop paying SDPA's masked (non-flash) kernel and an L² mask.

Which path runs (`attention_path`, said once in the log with the first packed forward):
- CUDA, model attention `sdpa`: FlexAttention, compiled (transformers' own `flex_attention_forward`). The model is
  switched to `sdpa_shared_prefix`, an attention function registered through transformers' AttentionInterface
  (and its mask through AttentionMaskInterface) that is SDPA for every other forward and FlexAttention for a block
  mask; nothing in the model's code changes.
- model attention `flex_attention` (CUDA only, model.attn_implementation): the block mask goes straight to it.
- CPU: the 4-D mask with SDPA. torch 2.13's FlexAttention has no CPU backward ("FlexAttention does not support
  backward on CPU"), so a training forward cannot use it. Compiled, a no-grad attention call is 1.3-1.5x SDPA's,
  after compiles of 1-14 s as the packed width changes (inductor's cache warm or cold); eager (its reference
  implementation) is 9x slower (bench/README.md, "The shared prefix through FlexAttention").
- eager attention, attention dropout (FlexAttention has none), or torch without FlexAttention: the 4-D mask.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.flex_attention import flex_attention_forward
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.utils import is_torch_flex_attn_available

from pipeline.train.levers.prefix_mask import PackedRows, visible
from pipeline.train.trl_surface import reached

FLEX, MASK = "FlexAttention block mask", "4-D mask"
# the registered attention function: SDPA, or FlexAttention when handed a block mask ("sdpa" in the name: transformers
# then checks the model supports SDPA before switching)
DISPATCH = "sdpa_shared_prefix"
# attention implementations that take a block mask as the attention mask
BLOCK_MASK_IMPLS = ("flex_attention", DISPATCH)
# how torch.compile'd flex runs on CPU (tests, bench): its reference implementation; "default" compiles it (no grad)
CPU_STANCE = "force_eager"


def sdpa_or_flex(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA for every attention mask transformers builds; FlexAttention for the packed rows' block mask."""
    if not _is_block_mask(attention_mask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    reached["FlexAttention block mask"] += 1
    if query.device.type == "cpu":
        # compiled flex on CPU has no backward and compiles per shape; eager is its reference implementation
        with torch.compiler.set_stance(CPU_STANCE):
            return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(DISPATCH, sdpa_or_flex)
# every mask transformers builds for this implementation is SDPA's (generation, per-row forwards)
AttentionMaskInterface.register(DISPATCH, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _is_block_mask(mask: Any) -> bool:
    if not is_torch_flex_attn_available():
        return False
    from torch.nn.attention.flex_attention import BlockMask

    return isinstance(mask, BlockMask)


def attention_path(device: torch.device, config: Any) -> tuple[str, str]:
    """(FLEX or MASK, why) for the packed rows of a model with this config on this device."""
    impl = config._attn_implementation
    if impl in BLOCK_MASK_IMPLS:
        return FLEX, f"the model's attention is {impl}"
    if getattr(config, "attention_dropout", 0.0):
        return MASK, "attention dropout is on (FlexAttention has no dropout)"
    if impl != "sdpa":
        return MASK, f"attention {impl} applies the 4-D mask as given"
    if device.type == "cuda" and is_torch_flex_attn_available():
        return FLEX, "CUDA: the block mask skips unseen blocks and keeps SDPA off its masked kernel"
    if device.type == "cpu":
        return MASK, "CPU: torch's FlexAttention has no CPU backward, and compiled it recompiles per packed width"
    return MASK, f"{device.type}: FlexAttention is not available"


def use_block_mask(model: torch.nn.Module, config: Any, device: torch.device) -> tuple[str, str]:
    """The path the packed rows take (`attention_path`); for FLEX with an SDPA model, the model's attention is first
    switched to DISPATCH (the same SDPA for every other forward), once, through transformers' public setter."""
    path, why = attention_path(device, config)
    if path == FLEX and config._attn_implementation == "sdpa":
        _pretrained(model).set_attn_implementation(DISPATCH)
    return path, why


def _pretrained(model: torch.nn.Module) -> PreTrainedModel:
    # under PEFT / DDP / accelerate wrappers: the transformers model whose config the attention layers read
    return next(module for module in model.modules() if isinstance(module, PreTrainedModel))


def block_mask(packed: PackedRows) -> Any:
    """The packed rows' mask as FlexAttention's BlockMask: `prefix_mask.visible` over their segments."""
    from torch.nn.attention.flex_attention import create_block_mask

    segment = packed.segment
    rows, size = segment.shape

    def mask_mod(batch: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return visible(query, key, segment[batch, query], segment[batch, key])

    return create_block_mask(mask_mod, B=rows, H=None, Q_LEN=size, KV_LEN=size, device=segment.device)
