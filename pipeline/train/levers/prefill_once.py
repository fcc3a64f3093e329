"""GRPO generation with each distinct prompt prefilled once (`stage.prefill_once`).

TRL hands `generate` G copies of every prompt, and `generate` prefills each copy. Here the prompt's keys and values
are computed once per distinct prompt (all tokens but the last, with the positions `generate` itself gives them) and
copied to its G rows as the starting cache; `generate` then runs as usual from the last prompt token, sampling
from the same logits (up to float summation order), so the same distribution.

Rows that finished still ride along in the decode steps until the longest row ends unless `drop_finished_rows`
(pipeline/train/levers/compact_decoding.py) supplies the loop; multimodal inputs and a caller's own cache keep the plain
call.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from pipeline.train.levers.prefix_mask import group_rows
from pipeline.train.trl_surface import reached, wrapped_generate


def prefilled_cache(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any | None:
    """The KV cache of every row's prompt but its last token, computed once per distinct prompt; None when no
    prompt repeats (nothing to save) or the prompts are a single token."""
    groups = group_rows(input_ids, attention_mask)
    if len(groups) == len(input_ids) or input_ids.size(1) < 2:
        return None
    firsts = torch.tensor([rows[0] for rows in groups], device=input_ids.device)
    owner = torch.empty(len(input_ids), dtype=torch.long, device=input_ids.device)
    for index, rows in enumerate(groups):
        owner[rows] = index
    ids, mask = input_ids[firsts, :-1], attention_mask[firsts, :-1]
    # the positions generate() derives from the mask, so every cached key sits where generate would put it
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        cache = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                      logits_to_keep=1).past_key_values
    cache.batch_select_indices(owner)
    return cache


def prefill_once(model: torch.nn.Module) -> AbstractContextManager[None]:
    """While inside, `model.generate(input_ids=..., attention_mask=...)` starts from a prefilled, shared cache."""

    def wrap(original: Any) -> Any:
        def generate(*args: Any, **kwargs: Any) -> Any:
            plain = args or "past_key_values" in kwargs or kwargs.get("attention_mask") is None or any(
                key not in ("input_ids", "attention_mask", "generation_config", "custom_generate") for key in kwargs)
            cache = None if plain else prefilled_cache(model, kwargs["input_ids"], kwargs["attention_mask"])
            if cache is None:
                return original(*args, **kwargs)
            reached["prefilled_cache"] += 1
            return original(**kwargs, past_key_values=cache)
        return generate

    return wrapped_generate(model, wrap)
