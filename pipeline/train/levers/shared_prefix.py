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
said once in the log: image inputs, MoE auxiliary loss, an attention implementation that ignores a custom 4-D mask
(flash-attention, flex, paged), sliding-window layers, non-CPU devices (the FlexAttention block-mask path is not
built yet), or a chunk in which no prompt repeats (nothing to save).

Exactness: with no dropout, the same numbers up to float summation order (fp32: ~1e-7, tests/test_shared_prefix.py);
with dropout, the same distribution (different draws, as between any two runs).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

import torch

from pipeline.train.levers.compact_decoding import drop_finished_rows
from pipeline.train.levers.fast_generation import FastGenerationGRPOTrainer
from pipeline.train.levers.prefill_once import prefill_once
from pipeline.train.levers.prefix_mask import PackedRows, group_rows, pack, shares_a_prefix
from pipeline.train.trl_surface import reached

log = logging.getLogger(__name__)

# attention implementations that apply a caller's 4-D mask as given (bool for SDPA, additive float for eager)
_MASK_FORMS: dict[str, bool] = {"sdpa": True, "eager": False}


def blocker(model: torch.nn.Module, device: torch.device, aux_loss: bool, extra: dict[str, Any]) -> str | None:
    """Why the shared-prefix layout cannot be used for this forward; None when it can."""
    if any(value is not None for value in extra.values()):
        return "image inputs tie positions to pixels"
    if aux_loss:
        return "the MoE auxiliary loss is computed over the row layout"
    if device.type != "cpu":
        return f"on {device.type} the FlexAttention block-mask path is not built yet"
    config = _config(model)
    impl = getattr(config, "_attn_implementation", None)
    if impl not in _MASK_FORMS:
        return f"attention implementation {impl!r} does not take a custom 4-D mask (use sdpa or eager)"
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


def packed_inputs(model: torch.nn.Module, packed: PackedRows) -> dict[str, torch.Tensor]:
    """Keyword arguments of a fused-LM-head forward of the packed rows (`blocker` must have passed)."""
    config = _config(model)
    dtype = None if _MASK_FORMS[config._attn_implementation] else next(model.parameters()).dtype
    return {"input_ids": packed.input_ids, "attention_mask": packed.attention_mask(dtype),
            "position_ids": packed.position_ids, "shift_labels": packed.shift_labels}


def packed_forward(model: torch.nn.Module, packed: PackedRows, compute_entropy: bool,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, C) log-probs and entropies of the original rows, from one forward of the packed rows."""
    outputs = model(**packed_inputs(model, packed), fused_lm_head=True)
    entropy = packed.unpack(outputs.entropy) if compute_entropy else None
    return packed.unpack(outputs.log_probs), entropy


class SaysOnce:
    """`_say(message)` logs each distinct message once per trainer (a fallback reason, the first packed shape)."""

    _said: set[str]

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.info("shared_prefix: %s", message)


class SharedPrefixGRPOTrainer(SaysOnce, FastGenerationGRPOTrainer):
    """FastGenerationGRPOTrainer whose log-prob forwards compute each prompt once per group when `shared_prefix`."""

    def __init__(self, *args: Any, shared_prefix: bool = False, prefill_once: bool = False,
                 drop_finished_rows: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared_prefix = shared_prefix
        # ZeRO-3 generates through gathered parameters of a wrapper the prefill would not go through
        self._prefill_once = prefill_once and not self.use_vllm and not (
            self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3)
        self._drop_finished_rows = drop_finished_rows and not self.use_vllm
        self._said: set[str] = set()

    def generation_context(self) -> AbstractContextManager[Any]:
        stack = super().generation_context()
        if self._prefill_once:
            stack.enter_context(prefill_once(self.accelerator.unwrap_model(self.model)))
        if self._drop_finished_rows:
            # entered last, so its loop reaches generate through prefill_once's wrapper
            stack.enter_context(drop_finished_rows(self.accelerator.unwrap_model(self.model)))
        return stack

    def _prepare_inputs(self, generation_batch):
        before = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        if not (self.shared_prefix and self.model.training and self._buffered_inputs is not before):
            return inputs
        reason = self._partition_matters()
        if reason is not None:
            self._say(f"micro-batches keep TRL's shuffled rows ({reason})")
            return inputs
        reached["_prepare_inputs"] += 1
        self._buffered_inputs = group_micro_batches(self._buffered_inputs)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _partition_matters(self) -> str | None:
        if self.loss_type == "bnpo":
            return "loss_type bnpo normalises by each micro-batch's tokens"
        if self.top_entropy_quantile < 1.0 or self._entropy_bonus_enabled:
            return "the entropy mask/bonus is computed per micro-batch"
        if any(key in self._buffered_inputs[0] for key in ("pixel_values", "image_grid_thw")):
            return "image inputs"
        return None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **extra):
        reason = blocker(model, input_ids.device, compute_aux_loss, extra) if self.shared_prefix else "off"
        if reason is not None:
            if reason != "off":
                self._say(f"per-row forwards instead ({reason})")
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **extra)
        reached["_get_per_token_logps_and_entropies"] += 1
        batch_size = batch_size or input_ids.size(0)
        width = input_ids.size(1) - logits_to_keep
        logps, entropies = [], []
        # the same chunks as TRL's loop, so memory peaks where the per-row path's do
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
            packed = pack(ids, mask, logits_to_keep) if shares_a_prefix(ids[:, :width], mask[:, :width]) else None
            if packed is None:
                chunk_logps, chunk_entropy, _ = super()._get_per_token_logps_and_entropies(
                    model, ids, mask, logits_to_keep, compute_entropy=compute_entropy)
            else:
                self._say(f"each prompt forwarded once per group ({len(ids)} rows -> {len(packed.input_ids)} "
                          f"packed rows of {packed.input_ids.size(1)} tokens in the first such forward)")
                with self.accelerator.autocast():
                    chunk_logps, chunk_entropy = packed_forward(model, packed, compute_entropy)
            logps.append(chunk_logps)
            entropies.append(chunk_entropy)
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None
