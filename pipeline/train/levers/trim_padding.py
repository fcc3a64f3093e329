"""GRPO training micro-batches cut to their own longest prompt and completion (always on; no switch).

TRL pads prompts (left) and completions (right) to the longest of the whole generation batch, so each micro-batch
carries the widest row of all of them. Training -20% at micro-batches of 1-2 on the same workload.
"""

from __future__ import annotations

from typing import Any

import torch

# inputs that tie token positions to images: the batch is left as TRL built it
_MULTIMODAL = ("pixel_values", "image_grid_thw", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def trim_padding(inputs: dict[str, Any]) -> dict[str, Any]:
    """Drop the columns that are padding in every row of this micro-batch.

    Dropped columns are masked out of the loss and, being left padding or after every completion's end, change no
    other token's output (RoPE sees relative positions only; a model with absolute position embeddings would
    instead see its prompts start at 0, as in generation).
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
