"""A rollout's earlier turns kept as keys and values for its next turn (`stage.prefill_once` in runs with tools).

TRL's tool loop calls generate once per turn with every unfinished rollout's whole history (prompt, replies, tool
results), each row left-padded to the longest, so plain generate prefills the whole game again on every turn: a
7-move game re-reads its first turn 7 times. Here the cache one generate call filled stays for the next call of the
same rollout batch (one `TurnReuse` per TRL `_generate`): a row whose history starts with all the tokens a row of
the last call holds keeps that row's keys and values, and only what it gained since (the tool result, the next
assistant header) is forwarded. What a finished row was padded with after its end of turn becomes a hole in the
attention mask, never attended, and positions count real tokens only (generate derives them from the mask), so
every token sees exactly its own history, as in a fresh prefill (pipeline/train/observe/turn_cache.py does the
same for held-out evaluation's greedy loop). A batch whose rows do not all extend held ones (the first turn, a
changed history) takes the fresh path: prefill_once's shared prefill.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from pipeline.train.levers.prefill_once import (
    full_attention_only,
    generation_config_of,
    plain_call,
    prefilled_inputs,
)
from pipeline.train.trl_surface import reached, wrapped_generate


def left_padded(rows: list[list[int]], pad: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows left-padded to the longest, and their attention mask (0 on the padding)."""
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def appended(ids: torch.Tensor, mask: torch.Tensor, chunks: list[list[int]],
             pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`ids` / `mask` with each row's chunk appended, the chunks left-padded to the longest (padding: holes)."""
    new, holes = left_padded(chunks, pad, ids.device)
    return torch.cat([ids, new.to(ids.dtype)], dim=1), torch.cat([mask, holes.to(mask.dtype)], dim=1)


def ended_rows(generated: torch.Tensor, ends: set[int]) -> torch.Tensor:
    """1 for each generated token up to and including its row's first end token, 0 after it (generate's padding)."""
    stop = torch.isin(generated, torch.tensor(sorted(ends), dtype=generated.dtype, device=generated.device))
    after = (stop.long().cumsum(dim=1) - stop.long()) > 0
    return (~after).long()


class TurnReuse:
    """The cache and rows of one rollout batch's latest generate call, held for its next turn."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.ids = self.mask = self.cache = None
        self.histories: list[list[int]] = []  # each held row's attended tokens

    def wrapping(self) -> AbstractContextManager[None]:
        """While inside, `model.generate(input_ids=..., attention_mask=...)` continues the held rows it extends."""

        def wrap(original: Any) -> Any:
            def generate(*args: Any, **kwargs: Any) -> Any:
                if plain_call(self.model, args, kwargs) or not full_attention_only(self.model):
                    self.forget()
                    return original(*args, **kwargs)
                ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
                held = self._extended(ids, mask, _pad_of(self.model, kwargs))
                if held is None:
                    held = self._fresh(ids, mask)
                else:
                    reached["reused_turn"] += 1
                laid_out, laid_mask, cache = held
                out = original(**{**kwargs, "input_ids": laid_out, "attention_mask": laid_mask},
                               past_key_values=cache)
                sequences = out if isinstance(out, torch.Tensor) else out.sequences
                generated = sequences[:, laid_out.size(1):]
                self.ids, self.cache = sequences, cache
                self.mask = torch.cat([laid_mask, ended_rows(generated, _ends_of(self.model, kwargs)).to(
                    laid_mask.dtype)], dim=1)
                self.histories = [row[m.bool()].tolist() for row, m in zip(self.ids, self.mask, strict=True)]
                # the caller's own prompt columns, then what was generated
                mine = torch.cat([ids, generated], dim=1)
                if isinstance(out, torch.Tensor):
                    return mine
                out.sequences = mine
                return out
            return generate

        return wrapped_generate(self.model, wrap)

    def forget(self) -> None:
        self.ids = self.mask = self.cache = None
        self.histories = []

    def _fresh(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        from transformers import DynamicCache

        prefilled = prefilled_inputs(self.model, ids, mask)
        if prefilled is None:
            return ids, mask, DynamicCache(config=self.model.config)
        reached["prefilled_cache"] += 1
        return prefilled.input_ids, prefilled.attention_mask, prefilled.cache

    def _extended(self, ids: torch.Tensor, mask: torch.Tensor,
                  pad: int) -> tuple[torch.Tensor, torch.Tensor, Any] | None:
        """The held rows each new row extends (in order, as TRL's tool loop keeps them), with the new tokens
        appended; None when any row extends none, or adds nothing to it."""
        if self.cache is None:
            return None
        picks, start = [], 0
        rows = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
        for row in rows:
            found = next((j for j in range(start, len(self.histories))
                          if len(self.histories[j]) < len(row) and row[: len(self.histories[j])] == self.histories[j]),
                         None)
            if found is None:
                return None
            picks.append(found)
            start = found + 1
        held_ids, held_mask, cache = self.ids, self.mask, self.cache
        if picks != list(range(len(self.histories))):
            index = torch.tensor(picks, device=held_ids.device)
            held_ids, held_mask = held_ids[index], held_mask[index]
            cache.batch_select_indices(index)
        chunks = [row[len(self.histories[j]):] for row, j in zip(rows, picks, strict=True)]
        return (*appended(held_ids, held_mask, chunks, pad), cache)


def _pad_of(model: torch.nn.Module, kwargs: dict[str, Any]) -> int:
    pad = kwargs.get("pad_token_id", getattr(generation_config_of(model, kwargs), "pad_token_id", None))
    return 0 if pad is None else int(pad)


def _ends_of(model: torch.nn.Module, kwargs: dict[str, Any]) -> set[int]:
    """The tokens generate stops a row on: after the first, the row holds only padding."""
    ends = kwargs.get("eos_token_id", getattr(generation_config_of(model, kwargs), "eos_token_id", None))
    ends = ends if isinstance(ends, list) else [ends]
    return {int(e) for e in ends if e is not None}
