"""GRPO forwards with each prompt computed once per group (`stage.shared_prefix`).

TRL scores G completions of a prompt as G rows [prompt, completion], so the prompt goes through the model G times
in every training forward and in the old-policy and reference forwards. Here the one method that runs those
forwards, `_get_per_token_logps_and_entropies`, packs the rows of each chunk by prompt (`prefix_mask.pack`) and
scores them through TRL's own fused LM head with pre-shifted labels; log-probs and entropies come back in TRL's
(rows, completion tokens) shape, so TRL's loss, KL term, importance ratios and metrics run unchanged on them.

Rows are grouped by identical prompt wherever they sit in a chunk, and a chunk is the one TRL would have forwarded:
a group split across micro-batches is packed per micro-batch, as the per-row path splits it. TRL shuffles each
generation batch before splitting it into micro-batches, which scatters a group over them; `group_micro_batches`
re-splits the same rows so each micro-batch holds whole groups (hw.micro_batch a multiple of num_generations), where
the loss does not depend on which rows share a micro-batch (every loss type but bnpo, no entropy bonus or
high-entropy mask: their normalisers are per micro-batch). The per-row path stays where the layout does not apply,
said once in the log: image inputs, MoE auxiliary loss, an attention implementation that takes neither a custom 4-D
mask nor a block mask (flash-attention, paged), sliding-window layers, devices other than CPU and CUDA, or a chunk
in which no prompt repeats (nothing to save). The packed rows' mask is a dense 4-D mask on CPU and FlexAttention's
block mask on CUDA (`prefix_flex.attention_path`; the first packed forward's log line says which).

Exactness: with no dropout, the same numbers up to float summation order (fp32: ~1e-7,
tests/train/levers/test_shared_prefix.py); with dropout, the same distribution (different draws, as between any two
runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from pipeline.train.levers.fp32_attention import FP32_ON_CPU
from pipeline.train.levers.prefix_flex import (
    BLOCK_MASK_IMPLS,
    DISPATCH,
    FLEX,
    attention_path,
    block_mask,
    use_block_mask,
)
from pipeline.train.levers.prefix_mask import PackedRows, group_rows, pack, shares_a_prefix
from pipeline.train.trl_surface import reached

log = logging.getLogger(__name__)

# attention implementations that apply a caller's 4-D mask as given (bool for SDPA, additive float for eager)
_MASK_FORMS: dict[str, bool] = {"sdpa": True, "eager": False, DISPATCH: True, FP32_ON_CPU: True}


def blocker(model: torch.nn.Module, device: torch.device, aux_loss: bool, extra: dict[str, Any]) -> str | None:
    """Why the shared-prefix layout cannot be used for this forward; None when it can."""
    if any(value is not None for value in extra.values()):
        return "image inputs tie positions to pixels"
    if aux_loss:
        return "the MoE auxiliary loss is computed over the row layout"
    if device.type not in ("cpu", "cuda"):
        return f"on {device.type} neither the 4-D mask (CPU) nor the FlexAttention block mask (CUDA) is proven"
    config = _config(model)
    impl = getattr(config, "_attn_implementation", None)
    if impl not in _MASK_FORMS and impl not in BLOCK_MASK_IMPLS:
        return (f"attention implementation {impl!r} takes neither a custom 4-D mask nor a block mask (use sdpa, "
                "eager or flex_attention)")
    layer_types = getattr(config, "layer_types", None)
    sliding = (any(t != "full_attention" for t in layer_types) if layer_types is not None
               else getattr(config, "sliding_window", None) is not None
               and getattr(config, "use_sliding_window", True))
    if sliding:
        return "sliding-window layers would see the whole packed row"
    return None


def _config(model: torch.nn.Module) -> Any:
    while hasattr(model, "module"):  # DDP / accelerate wrappers
        model = model.module
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def group_micro_batches(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows in micro-batches of the same sizes, each group's rows next to each other (groups in the
    shuffled order of their first row, rows within a group in shuffled order)."""
    rows = [len(chunk["prompt_ids"]) for chunk in chunks]
    whole = {key: _join([chunk[key] for chunk in chunks]) for key in chunks[0]}
    order = [row for group in group_rows(whole["prompt_ids"], whole["prompt_mask"]) for row in group]
    index = torch.tensor(order, device=whole["prompt_ids"].device)
    regrouped = {key: _take(value, index, order) for key, value in whole.items()}
    out, start = [], 0
    for size in rows:
        out.append({key: _take(value, torch.arange(start, start + size, device=index.device),
                               list(range(start, start + size))) for key, value in regrouped.items()})
        start += size
    return out


def _join(values: list[Any]) -> Any:
    first = values[0]
    if first is None or (isinstance(first, torch.Tensor) and first.ndim == 0):
        return first  # per-batch scalars (num_items_in_batch) are the same in every micro-batch
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    return [item for value in values for item in value]


def _take(value: Any, index: torch.Tensor, order: list[int]) -> Any:
    if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
        return value
    if isinstance(value, torch.Tensor):
        return value[index]
    return [value[i] for i in order]


def packed_inputs(model: torch.nn.Module, packed: PackedRows) -> dict[str, Any]:
    """Keyword arguments of a fused-LM-head forward of the packed rows (`blocker` must have passed): the mask as
    FlexAttention's block mask or as the dense 4-D mask (`prefix_flex.attention_path`)."""
    config = _config(model)
    path, _ = use_block_mask(model, config, packed.input_ids.device)
    if path == FLEX:
        mask = block_mask(packed)
    else:
        mask = packed.attention_mask(None if _MASK_FORMS[config._attn_implementation] else
                                     next(model.parameters()).dtype)
    return {"input_ids": packed.input_ids, "attention_mask": mask, "position_ids": packed.position_ids,
            "shift_labels": packed.shift_labels}


def attention_said(model: torch.nn.Module, device: torch.device) -> str:
    """Which mask the packed rows go through and why, for the once-per-run log line."""
    path, why = attention_path(device, _config(model))
    return f"through the {path}: {why}"


def packed_forward(model: torch.nn.Module, packed: PackedRows, compute_entropy: bool,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, C) log-probs and entropies of the original rows, from one forward of the packed rows."""
    outputs = model(**packed_inputs(model, packed), fused_lm_head=True)
    entropy = packed.unpack(outputs.entropy) if compute_entropy else None
    return packed.unpack(outputs.log_probs), entropy


class SaysOnce:
    """`says(kind, message)` logs the first message of each kind (a fallback reason, the first packed shape) once
    per trainer: the same kind of line with other numbers in it does not repeat every step."""

    def __init__(self, lever: str) -> None:
        self.lever = lever
        self._said: set[str] = set()

    def __call__(self, kind: str, message: str) -> None:
        if kind not in self._said:
            self._said.add(kind)
            log.info("%s: %s", self.lever, message)


def regroup_blocker(trainer: Any, buffered: list[dict[str, Any]]) -> str | None:
    """Why micro-batches must keep TRL's shuffled rows (the loss depends on which rows share one); None when whole
    groups per micro-batch give the same loss."""
    if trainer.loss_type == "bnpo":
        return "loss_type bnpo normalises by each micro-batch's tokens"
    if trainer.top_entropy_quantile < 1.0 or trainer._entropy_bonus_enabled:
        return "the entropy mask/bonus is computed per micro-batch"
    if any(key in buffered[0] for key in ("pixel_values", "image_grid_thw")):
        return "image inputs"
    return None


def packed_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                 batch_size: int, compute_entropy: bool, per_row: Callable[..., Any], autocast: Any, says: SaysOnce,
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """TRL's (log-probs, entropies) of the completion tokens, each chunk's prompts forwarded once per group;
    `per_row(model, ids, mask, logits_to_keep, compute_entropy=...)` is TRL's own path for a chunk where no prompt
    repeats."""
    reached["_get_per_token_logps_and_entropies"] += 1
    width = input_ids.size(1) - logits_to_keep
    logps, entropies = [], []
    # the same chunks as TRL's loop, so memory peaks where the per-row path's do
    for start in range(0, input_ids.size(0), batch_size):
        ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
        packed = pack(ids, mask, logits_to_keep) if shares_a_prefix(ids[:, :width], mask[:, :width]) else None
        if packed is None:
            chunk_logps, chunk_entropy, _ = per_row(model, ids, mask, logits_to_keep, compute_entropy=compute_entropy)
        else:
            says("packed", f"each prompt forwarded once per group ({len(ids)} rows -> {len(packed.input_ids)} packed "
                           f"rows of {packed.input_ids.size(1)} tokens in the first such forward), "
                           f"{attention_said(model, ids.device)}")
            with autocast():
                chunk_logps, chunk_entropy = packed_forward(model, packed, compute_entropy)
        logps.append(chunk_logps)
        entropies.append(chunk_entropy)
    return torch.cat(logps), torch.cat(entropies) if compute_entropy else None
