"""Greedy replies for a batch of episodes, turn after turn, the key/value cache kept across turns.

    turns = TurnCache(model, tokenizer, budget)
    replies = turns.replies(episodes)        # each episode's tokens so far -> its next reply (cut at end of turn)
    ...                                      # tool results appended to some episodes, others finished
    replies = turns.replies(still_playing)   # only the new tokens (tool results) are forwarded

Without the cache every turn re-reads the whole episode: the ~300-token tool prompt and the game so far, which is
most of a multi-turn evaluation's time on a CPU. The batch keeps one row per episode in one tensor; what a row
does not hold (left padding, what the model generated past its end of turn, padding of the new tokens to a common
width) is a hole in the attention mask. Holes are never attended, and positions count real tokens only (generate
derives them from the mask), so each row reads exactly its episode's tokens, as a fresh prefill would.
A model with sliding-window layers (a window counts holes as positions) gets a fresh prefill every turn instead.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.train.levers.bf16_frozen import full_precision
from pipeline.train.levers.prefill_once import full_attention_only, prefilled_inputs
from pipeline.train.levers.turn_reuse import appended, left_padded


class TurnCache:
    """One batch of episodes: their token rows, attention mask and key/value cache, from turn to turn."""

    def __init__(self, model: Any, tokenizer: Any, budget: int) -> None:
        self.model, self.budget = model, budget
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos = end_of_turn_ids(model, tokenizer)
        self.reuse = full_attention_only(model)
        self.rows: list[Any] = []  # the episode each row of ids/mask belongs to
        self.ids = self.mask = self.cache = None

    def replies(self, episodes: list[Any]) -> list[list[int]]:
        """One greedy reply per episode (a subset of the last call's, in its order, or a new batch), each cut after
        its first end-of-turn token and to the episode's own token budget."""
        fresh = not self.reuse or self.ids is None
        if fresh:
            self._start(episodes)
        else:
            self._extend(episodes)
        room = [self.budget - len(e.completion_ids) for e in episodes]
        width = self.ids.shape[1]
        with full_precision(self.model):  # no autocast here: the fp32 weights, not bf16 copies held while training
            if fresh and self.reuse:  # the episodes' common opening (system prompt, tool block) computed once
                self._prefill()
            out = self.model.generate(
                input_ids=self.ids, attention_mask=self.mask, past_key_values=self.cache,
                max_new_tokens=max(max(room), 1), do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=self.pad)
        replies, kept = [], []
        for row, limit in zip(out[:, width:].tolist(), room, strict=True):
            end = next((i + 1 for i, tok in enumerate(row) if tok in self.eos), len(row))
            reply = row[: min(end, max(limit, 0))]
            replies.append(reply)
            kept.append([1] * len(reply) + [0] * (len(row) - len(reply)))  # past the end of turn: holes
        self.ids = out
        self.mask = torch.cat([self.mask, torch.tensor(kept, dtype=self.mask.dtype, device=out.device)], dim=1)
        return replies

    def _start(self, episodes: list[Any]) -> None:
        from transformers import DynamicCache

        inputs = [e.prompt_ids + e.completion_ids for e in episodes]
        self.ids, self.mask = left_padded(inputs, self.pad, self.model.device)
        self.cache = DynamicCache(config=self.model.config) if self.reuse else None
        self.rows = list(episodes)

    def _prefill(self) -> None:
        prefilled = prefilled_inputs(self.model, self.ids, self.mask)
        if prefilled is not None:
            self.ids, self.mask, self.cache = prefilled.input_ids, prefilled.attention_mask, prefilled.cache

    def _extend(self, episodes: list[Any]) -> None:
        """Keeps the rows of `episodes` and appends what each episode gained since (its tool results)."""
        index = {id(e): i for i, e in enumerate(self.rows)}
        keep = [index[id(e)] for e in episodes]
        if keep != list(range(len(self.rows))):
            picked = torch.tensor(keep, device=self.ids.device)
            self.ids, self.mask = self.ids[picked], self.mask[picked]
            self.cache.batch_select_indices(picked)
        chunks = []
        for row, episode in enumerate(episodes):
            tokens = episode.prompt_ids + episode.completion_ids
            held = self.ids[row][self.mask[row].bool()].tolist()
            if tokens[: len(held)] != held:
                raise RuntimeError("an episode's tokens changed under the turn cache (only appending is supported)")
            chunks.append(tokens[len(held):])
        self.ids, self.mask = appended(self.ids, self.mask, chunks, self.pad)
        self.rows = list(episodes)


def end_of_turn_ids(model: Any, tokenizer: Any) -> set[int]:
    """The generation config's EOS (what generate() stops on) and the tokenizer's (the chat template's end of turn)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}
