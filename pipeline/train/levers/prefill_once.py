"""Generation with each distinct prompt prefilled once, and the prompts' common opening once for all of them
(`stage.prefill_once`, and held-out evaluation).

TRL hands `generate` G copies of every prompt, and `generate` prefills each copy; a chat template also opens every
prompt with the same tokens (the system prompt, the tool block: 27 of SmolLM2's 46 arithmetic tokens, ~280 of a
calculator prompt's ~300). Here the keys and values of every prompt but its last token are computed once per
distinct prompt, the opening all distinct prompts share once in all, with the positions `generate` itself gives
them, and copied to each row as the starting cache; `generate` then runs as usual from the last prompt token,
sampling from the same logits (up to float summation order), so the same distribution.

To share the opening, each row is laid out as [shared opening | its left padding | the rest of its prompt]: the
padding becomes a hole in the attention mask, never attended, and positions count real tokens only (`generate`
derives them from the mask), so every token sees exactly its own prompt. The opening is shared only where that
saves enough (MIN_SAVED_TOKENS: not GRPO's 4 arithmetic prompts a step, yes for a held-out batch or tool prompts),
and not on a model with sliding-window layers (a window counts holes as positions). The output keeps the caller's
own prompt columns.

Rows that finished still ride along in the decode steps until the longest row ends unless `drop_finished_rows`
(pipeline/train/levers/compact_decoding.py) supplies the loop; multimodal inputs, a caller's own cache and
several sequences per prompt (beams, num_return_sequences) keep the plain call.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.train.levers.prefix_mask import group_rows
from pipeline.train.trl_surface import reached, wrapped_generate

# Sharing an opening costs a forward of its own (one more pass over the weights) and pays when it saves more token
# forwards than this, (distinct prompts - 1) x opening. Measured on SmolLM2-135M, 2 CPU cores, 27-token opening of
# 46-token prompts: 4 prompts (saves 81) 0.342 -> 0.328 s, 8 prompts (189) 0.75 -> 0.48 s, 50 prompts 3.6 -> 1.6 s.
MIN_SAVED_TOKENS = 256
# generate() arguments the prefill reads the same whatever they are (anything else keeps the plain call)
_PASSED_THROUGH = {"input_ids", "attention_mask", "generation_config", "custom_generate", "max_new_tokens",
                   "pad_token_id", "eos_token_id", "do_sample", "temperature", "top_p", "top_k", "min_new_tokens"}


@dataclass(frozen=True)
class Prefilled:
    """The inputs to hand `generate`: the rows (re-laid out when an opening is shared) and their cache."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cache: Any
    opening: int  # tokens computed once for every row (0: only repeated prompts were shared)


def prefilled_inputs(model: torch.nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> Prefilled | None:
    """Every row's prompt but its last token as a cache, each distinct prompt computed once and their common
    opening once; None when nothing would be saved (no prompt repeats and no opening is shared, or 1-token
    prompts)."""
    if input_ids.size(1) < 2:
        return None
    groups = group_rows(input_ids, attention_mask)
    firsts = torch.tensor([rows[0] for rows in groups], device=input_ids.device)
    # the layout moves left padding only; a row with holes elsewhere, or a sliding window, shares no opening
    left_padded = bool((attention_mask.long().diff(dim=1) >= 0).all())
    opening = shared_opening(input_ids[firsts], attention_mask[firsts]) \
        if left_padded and full_attention_only(model) else 0
    if opening == 0 and len(groups) == len(input_ids):
        return None
    ids, mask = (input_ids, attention_mask) if opening == 0 else opening_first(input_ids, attention_mask, opening)
    owner = torch.empty(len(input_ids), dtype=torch.long, device=input_ids.device)
    for index, rows in enumerate(groups):
        owner[rows] = index
    cache = _forward(model, ids[firsts[:1], :opening], mask[firsts[:1], :opening], None) if opening else None
    if cache is not None and len(groups) > 1:
        cache.batch_repeat_interleave(len(groups))
    if ids.size(1) - 1 > opening:
        cache = _forward(model, ids[firsts, :-1], mask[firsts, :-1], cache)
    cache.batch_select_indices(owner)
    return Prefilled(ids, mask, cache, opening)


def _forward(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, cache: Any) -> Any:
    """The cache after forwarding `ids` (all columns when `cache` is None, else those past its length)."""
    # the positions generate() derives from the mask, so every cached key sits where generate would put it
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    done = 0 if cache is None else cache.get_seq_length()
    with torch.no_grad():
        return model(input_ids=ids[:, done:], attention_mask=mask, position_ids=positions[:, done:],
                     past_key_values=cache, use_cache=True, logits_to_keep=1).past_key_values


def shared_opening(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """Tokens every row's prompt (left padding aside) opens with, leaving each row its last token unprefilled; 0
    when computing them once for all rows would save fewer than MIN_SAVED_TOKENS token forwards."""
    if len(input_ids) < 2:
        return 0
    rows = [ids[m.bool()] for ids, m in zip(input_ids, attention_mask, strict=True)]
    shortest = min(len(r) for r in rows)
    first = rows[0][:shortest]
    same = torch.ones(shortest, dtype=torch.bool, device=input_ids.device)
    for row in rows[1:]:
        same &= row[:shortest] == first
    length = min(int(same.long().cumprod(0).sum()), shortest - 1)
    return length if length * (len(rows) - 1) >= MIN_SAVED_TOKENS else 0


def opening_first(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  opening: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows laid out as [opening | padding | rest], the padding a hole in the mask (same width)."""
    ids, mask = input_ids.clone(), attention_mask.clone()
    pads = attention_mask.size(1) - attention_mask.sum(1)
    for row, pad in enumerate(pads.tolist()):
        if pad:
            ids[row, :opening] = input_ids[row, pad : pad + opening]
            ids[row, opening : opening + pad] = input_ids[row, :pad]
            mask[row, :opening], mask[row, opening : opening + pad] = 1, 0
    return ids, mask


def full_attention_only(model: Any) -> bool:
    """Whether every layer attends to the whole sequence (no sliding window), so holes in a row cost nothing."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return False
    return not getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", None) is False


def plain_call(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a generate call keeps its own path: positional arguments, no attention mask, an argument the prefill
    does not read, or several sequences per prompt (beams, num_return_sequences)."""
    if args or kwargs.get("attention_mask") is None or not set(kwargs) <= _PASSED_THROUGH:
        return True
    config = generation_config_of(model, kwargs)
    return any((getattr(config, key, 1) or 1) != 1 for key in ("num_beams", "num_return_sequences"))


def generation_config_of(model: torch.nn.Module, kwargs: dict[str, Any]) -> Any:
    """The generation config a generate call runs under: its own argument, else the model's."""
    return kwargs.get("generation_config") or getattr(model, "generation_config", None)


def prefill_once(model: torch.nn.Module) -> AbstractContextManager[None]:
    """While inside, `model.generate(input_ids=..., attention_mask=...)` starts from a prefilled, shared cache."""

    def wrap(original: Any) -> Any:
        def generate(*args: Any, **kwargs: Any) -> Any:
            prefilled = None if plain_call(model, args, kwargs) else prefilled_inputs(
                model, kwargs["input_ids"], kwargs["attention_mask"])
            if prefilled is None:
                return original(*args, **kwargs)
            reached["prefilled_cache"] += 1
            if prefilled.opening:
                reached["shared_opening"] += 1
            out = original(**{**kwargs, "input_ids": prefilled.input_ids, "attention_mask": prefilled.attention_mask},
                           past_key_values=prefilled.cache)
            return _with_prompt_columns(out, kwargs["input_ids"])
        return generate

    return wrapped_generate(model, wrap)


def _with_prompt_columns(out: Any, input_ids: torch.Tensor) -> Any:
    """generate's output with the caller's own prompt layout in its first columns (the generated ones are the
    same in either layout)."""
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    sequences[:, : input_ids.size(1)] = input_ids
    return out
