"""Faster GRPO steps on TRL's transformers path, without changing what is sampled or the loss.

Measured on CPU (SmolLM2-135M + LoRA r16, 32 completions x 64 tokens, 2 cores): 11.3 s per generation with TRL as is,
9.2 s with inverse-CDF sampling, 7.7 s with the LoRA also merged for the duration of the call.

- `merged_lora`: generation runs through base weights with the adapter folded in, instead of the extra adapter
  matmuls of every layer. The merge goes into a copy of each adapted weight and the original tensors are put back
  afterwards, so training continues bit-for-bit on the weights it had (no merge/unmerge rounding drift).
- `inverse_cdf_sampling`: `torch.multinomial` draws one exponential per vocabulary entry (49k per token on
  SmolLM2, ~25 ms per decode step on 2 cores); one uniform per row against the cumulative distribution samples the
  same distribution at a fraction of the cost.
- `trim_padding`: each training micro-batch is cut to its own longest prompt and completion (training −20% at
  micro-batches of 1–2 on the same workload).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import torch

from pipeline.train.trl_surface import HookedGRPOTrainer, torch_multinomial


@contextmanager
def merged_lora(model: torch.nn.Module) -> Iterator[None]:
    """Generate through merged weights; the unmerged originals are restored exactly on exit."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.merged]
    originals = [(m.get_base_layer().weight, m.get_base_layer().weight.data) for m in layers]
    for weight, data in originals:
        weight.data = data.clone()
    for layer in layers:
        layer.merge()
    try:
        yield
    finally:
        for layer in layers:
            # marks the layer unmerged (the arithmetic lands on the copy, which is then dropped)
            layer.unmerge()
        for weight, data in originals:
            weight.data = data


def _inverse_cdf(probs: torch.Tensor, num_samples: int, *args: Any, **kwargs: Any) -> torch.Tensor:
    if probs.dim() != 2 or num_samples != 1 or args or kwargs:
        return _multinomial(probs, num_samples, *args, **kwargs)
    cumulative = probs.cumsum(-1)
    point = torch.rand(probs.size(0), 1, device=probs.device, dtype=cumulative.dtype) * cumulative[:, -1:]
    # right=True: the first entry whose cumulative mass exceeds the point, so zero-probability entries never win
    return torch.searchsorted(cumulative, point, right=True).clamp_(max=probs.size(1) - 1)


_multinomial = torch.multinomial


def inverse_cdf_sampling() -> AbstractContextManager[Any]:
    """Route transformers' single-sample `torch.multinomial` calls through `_inverse_cdf` while inside."""
    return torch_multinomial(_inverse_cdf)


# inputs that tie token positions to images: the batch is left as TRL built it
_MULTIMODAL = ("pixel_values", "image_grid_thw", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def trim_padding(inputs: dict[str, Any]) -> dict[str, Any]:
    """Drop the columns that are padding in every row of this micro-batch.

    TRL pads prompts (left) and completions (right) to the longest of the whole generation batch, so each
    micro-batch carries the widest row of all of them. Dropped columns are masked out of the loss and, being left
    padding or after every completion's end, change no other token's output (RoPE sees relative positions only;
    a model with absolute position embeddings would instead see its prompts start at 0, as in generation).
    """
    if any(inputs.get(key) is not None for key in _MULTIMODAL):
        return inputs
    prompt_mask, completion_mask = inputs["prompt_mask"], inputs["completion_mask"]
    width = completion_mask.size(1)
    first = int(prompt_mask.any(0).int().argmax()) if prompt_mask.any() else prompt_mask.size(1) - 1
    used = completion_mask.any(0).nonzero()
    keep = int(used[-1]) + 1 if used.numel() else 1
    trimmed = dict(inputs)
    for key, value in inputs.items():
        if key.startswith("prompt_") and isinstance(value, torch.Tensor):
            trimmed[key] = value[:, first:]
        elif isinstance(value, torch.Tensor) and value.dim() == 2 and value.size(1) == width:
            trimmed[key] = value[:, :keep]
    return trimmed


class FastGenerationGRPOTrainer(HookedGRPOTrainer):
    """TRL's GRPOTrainer with its transformers generation call wrapped by the speed-ups switched on, and each
    training micro-batch cut to its own longest row (`trim_padding`)."""

    def __init__(self, *args: Any, merge_lora: bool = False, fast_sampling: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._merge_lora = merge_lora and _mergeable(self)
        self._fast_sampling = fast_sampling

    def micro_batch(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return trim_padding(inputs)

    def generation_context(self) -> AbstractContextManager[Any]:
        stack = ExitStack()
        if not self.use_vllm:
            if self._merge_lora:
                stack.enter_context(merged_lora(self.accelerator.unwrap_model(self.model)))
            if self._fast_sampling:
                stack.enter_context(inverse_cdf_sampling())
        return stack


def _mergeable(trainer: HookedGRPOTrainer) -> bool:
    # LoRA on plain weights: quantized bases cannot take the merge, ZeRO-3 holds only a shard of each weight.
    model = trainer.accelerator.unwrap_model(trainer.model)
    quantized = getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_loaded_in_4bit", False)
    zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    return hasattr(model, "peft_config") and not quantized and not zero3
