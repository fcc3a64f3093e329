"""Decode one padded batch of requests together, token by token over a shared KV cache.

Each row keeps its own sampling (greedy at temperature 0, else temperature + top-p with an optional seed), its own
token budget and stop strings, and reports its text as it grows; a finished row rides along until the batch ends
(its tokens are ignored), which keeps the cache rectangular at the price of a little wasted compute."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Delta:
    """New text of a row, final: never taken back."""

    text: str


@dataclass(frozen=True)
class Done:
    finish_reason: str  # "stop" (end of turn or a stop string), "length" (max_tokens) or "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Done | Failed


@dataclass
class Row:
    """One request to generate: a prompt, how to pick tokens, when to end, and where its events go."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    emit: Callable[[Event], None] = lambda event: None
    # Set when the client went away: the row ends at its next token.
    cancelled: threading.Event = field(default_factory=threading.Event)


def decode_batch(model: Any, tokenizer: Any, rows: list[Row]) -> None:
    """Generate every row to its end, sending Delta events as text becomes final and one Done per row."""
    device, n = model.device, len(rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(r.prompt_ids) for r in rows)
    # Left padding keeps every prompt's last token adjacent to the tokens generated after it; positions count
    # real tokens only, so a padded row sees the positions it would see alone.
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row.prompt_ids):] = torch.tensor(row.prompt_ids)
        mask[i, width - len(row.prompt_ids):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    progress = [_Progress(row, tokenizer, _end_of_turn_ids(model, tokenizer)) for row in rows]
    generators = [_generator(row.seed, device) for row in rows]
    past = None
    # Only the last position's logits are read: the prompt pass then skips a (rows x prompt x vocab) projection.
    last_only = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}
    with torch.no_grad():
        for _ in range(max(r.max_tokens for r in rows)):
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past,
                        use_cache=True, **last_only)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            chosen = [_pick(logits[i], row, generators[i]) for i, row in enumerate(rows)]
            for state, token in zip(progress, chosen, strict=True):
                state.add(token)
            if all(state.done for state in progress):
                break
            ids = torch.tensor(chosen, device=device)[:, None]
            mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
            positions = positions[:, -1:] + 1


def _pick(logits: torch.Tensor, row: Row, generator: torch.Generator | None) -> int:
    if row.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / row.temperature, dim=-1)
    if row.top_p < 1.0:
        # Nucleus: keep the most likely tokens whose mass reaches top_p (always at least the first).
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= row.top_p
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
    return int(torch.multinomial(probs, 1, generator=generator))


def _takes_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper passes it on
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device).manual_seed(seed)


def _end_of_turn_ids(model: Any, tokenizer: Any) -> set[int]:
    # The generation config's EOS (what generate() stops on) and the tokenizer's (the chat template's end of turn).
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


class _Progress:
    """One row's tokens and text so far, and how much of the text has been sent."""

    def __init__(self, row: Row, tokenizer: Any, end_ids: set[int]) -> None:
        self.row, self.tokenizer, self.end_ids = row, tokenizer, end_ids
        self.tokens: list[int] = []
        self.sent = 0
        self.done = False

    def add(self, token: int) -> None:
        if self.done:
            return
        if self.row.cancelled.is_set():
            return self._finish("", "cancelled")
        if token in self.end_ids:
            return self._finish(self._text(), "stop")
        self.tokens.append(token)
        text = self._text()
        cut = min((i for i in (text.find(s) for s in self.row.stop) if i >= 0), default=-1)
        if cut >= 0:
            return self._finish(text[:cut], "stop")
        if len(self.tokens) >= self.row.max_tokens:
            return self._finish(text, "length")
        final = len(text) - _unsettled(text, self.row.stop)
        if final > self.sent:
            self.row.emit(Delta(text[self.sent:final]))
            self.sent = final

    def _text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def _finish(self, text: str, reason: str) -> None:
        self.done = True
        if len(text) > self.sent:
            self.row.emit(Delta(text[self.sent:]))
        self.row.emit(Done(reason, len(self.row.prompt_ids), len(self.tokens)))


def _unsettled(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters may still change: a half-decoded UTF-8 character, or the start of a stop
    string that the next tokens could complete (sent text is never taken back)."""
    held = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:k]):
                held = k
                break
    return held
