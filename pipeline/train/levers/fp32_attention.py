"""Attention in fp32 while a bf16 run trains on CPU: torch's CPU SDPA kernel is slower in bf16 than in fp32.

Under bf16 autocast the projections hand SDPA bf16 queries, keys and values (autocast lists SDPA as a bf16 op on
CPU). On the CPUs bf16 is picked for (avx512_bf16; torch 2.13, 2 threads) the bf16 kernel is the slow one: a decode
step's attention (32 rows, 9/3 heads x 64, 56 cached tokens) 1.21 ms vs 0.50 ms cast to fp32, a packed training
row's forward + backward (4 x 153 tokens) 14.4 ms vs 9.7 ms, casts included (bench/attention_precision_cpu.py).
Attention is a small part of the matmul work, so the projections (and their bf16 speed) stay bf16; only q, k and v
are cast up, the attention runs outside autocast, and its output goes back to the values' dtype: bf16 for o_proj
(fp32 in a generation whose projections packed_linears computes in fp32). fp32 attention is
also the more exact one (softmax over fp32 scores), so sampling and training on it agree no worse than before.

The model's `sdpa` is switched to `sdpa_fp32_on_cpu` (registered through transformers' AttentionInterface, its mask
through AttentionMaskInterface: SDPA's) for the run and switched back after; fp32 inputs and other devices pass
straight through to transformers' SDPA.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from pipeline.train.trl_surface import reached

log = logging.getLogger(__name__)

# "sdpa" in the name: transformers then checks the model supports SDPA before switching
FP32_ON_CPU = "sdpa_fp32_on_cpu"


def sdpa_fp32_on_cpu(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    autocast = torch.is_autocast_enabled("cpu")
    low = torch.get_autocast_dtype("cpu") if autocast else query.dtype
    if query.device.type != "cpu" or low == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # (Qwen3's q/k norms hand over fp32 queries and keys under autocast; SDPA would cast them down all the same)
    reached["fp32 attention"] += 1
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()  # an additive mask must match the scores' dtype
    if kwargs.get("position_bias") is not None:
        kwargs["position_bias"] = kwargs["position_bias"].float()
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    # back in the values' dtype: autocast's bf16 for o_proj, or fp32 where packed_linears computes the projections
    return out.to(value.dtype), weights


AttentionInterface.register(FP32_ON_CPU, sdpa_fp32_on_cpu)
AttentionMaskInterface.register(FP32_ON_CPU, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextmanager
def fp32_attention(model: torch.nn.Module | None) -> Iterator[None]:
    """While inside, a model whose attention is `sdpa` runs it through `sdpa_fp32_on_cpu`; `sdpa` again on exit
    (what is saved names the model's own implementation). None or another implementation: nothing changes."""
    inner = None if model is None else next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if inner is None or inner.config._attn_implementation != "sdpa":
        yield
        return
    inner.set_attn_implementation(FP32_ON_CPU)
    log.info("bf16 autocast on CPU: attention runs in fp32 (q, k, v cast up; torch's CPU SDPA is slower in bf16)")
    try:
        yield
    finally:
        inner.set_attn_implementation("sdpa")
