"""Padding-free rows attend one row at a time on CPU: one causal SDPA call per row instead of one over the packed row.

SFT's padding-free micro-batches (TRL's collator) put their rows side by side in one sequence, with positions that
restart per row and the rows' bounds as `cu_seq_lens_q`. transformers' SDPA then builds a block-diagonal causal
mask over the whole packed sequence, and torch's CPU kernel computes every block of it, the masked ones included:
for 2 rows of 223 tokens that is (2 x 223)^2 scores where the rows need 2 x 223^2 / 2. Run per row with
`is_causal`, attention computes only what the rows see: the same attention, up to summation order.

Under bf16 autocast each row goes through `sdpa_fp32_on_cpu` (levers/fp32_attention.py), so the two levers compose.
The model's `sdpa` (or `sdpa_fp32_on_cpu`) is switched to `sdpa_rows_on_cpu` for the run and back after; calls
without row bounds (padded batches, generation with a cache) and other devices pass straight through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from pipeline.train.levers.fp32_attention import FP32_ON_CPU, sdpa_fp32_on_cpu
from pipeline.train.trl_surface import reached

log = logging.getLogger(__name__)

ROWS_ON_CPU = "sdpa_rows_on_cpu"


def sdpa_rows_on_cpu(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    bounds = _row_bounds(module, query, key, kwargs)
    if bounds is None:
        return sdpa_fp32_on_cpu(module, query, key, value, attention_mask, **kwargs)
    reached["attention by row"] += 1
    # no mask: each row alone is plain causal attention ([batch, tokens, heads, dim] back, as SDPA's wrapper gives)
    rows = [sdpa_fp32_on_cpu(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], None,
                             **kwargs)[0] for start, end in zip(bounds, bounds[1:], strict=False)]
    return torch.cat(rows, dim=1), None


def _row_bounds(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                kwargs: dict[str, Any]) -> list[int] | None:
    """The packed rows' bounds where per-row causal attention is exactly what the mask asks; else None."""
    starts, key_starts = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if starts is None or key_starts is None or query.device.type != "cpu" or query.shape[0] != 1:
        return None
    # a sliding window, an additive bias or a non-causal layer changes the mask: SDPA's own path keeps them
    if kwargs.get("position_bias") is not None or getattr(module, "sliding_window", None) is not None \
            or kwargs.get("is_causal", getattr(module, "is_causal", True)) is False:
        return None
    bounds = starts.tolist()
    if bounds != key_starts.tolist() or bounds[0] != 0 or bounds[-1] != query.shape[2] \
            or key.shape[2] != query.shape[2]:
        return None
    return bounds


AttentionInterface.register(ROWS_ON_CPU, sdpa_rows_on_cpu)
AttentionMaskInterface.register(ROWS_ON_CPU, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextmanager
def row_attention(model: torch.nn.Module | None) -> Iterator[None]:
    """While inside, a model on SDPA (or fp32_attention's) attends padding-free rows one row at a time; its
    implementation before on exit. None or another implementation: nothing changes."""
    inner = None if model is None else next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    before = None if inner is None else inner.config._attn_implementation
    if before not in ("sdpa", FP32_ON_CPU):
        yield
        return
    inner.set_attn_implementation(ROWS_ON_CPU)
    calls = reached["attention by row"]
    try:
        yield
    finally:
        inner.set_attn_implementation(before)
        if reached["attention by row"] > calls:  # said once, at the end: whether any batch was padding-free
            log.info("padding-free rows were attended one row at a time (%d attention calls; hw.row_attention)",
                     reached["attention by row"] - calls)
