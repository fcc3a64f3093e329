"""Decode one padded batch of requests together, token by token over a shared KV cache.

Each row keeps its own sampling (greedy at temperature 0, else temperature + top-p from its own seeded generator,
so a seeded row draws the same tokens whatever else shares its batch), its own token budget and stop strings, and
reports its text as it grows; a finished row rides along until the batch ends (its tokens are ignored), which keeps
the cache rectangular at the price of a little wasted compute. Rows that ask for log-probs get them from the raw
logits (before temperature and top-p, as OpenAI and vLLM report them); the others pay nothing for it."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.train.observe.turn_cache import end_of_turn_ids


@dataclass(frozen=True)
class TokenLogprob:
    """One token and how likely the model found it at its position."""

    id: int
    # None for a prompt's first token: nothing before it predicts it
    logprob: float | None
    # the most likely ids at this position with their log-probs, best first (as many as the row asked for)
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """New text of a row, final: never taken back; with log-probs on, the tokens that made it (and an end token)."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Prompt:
    """The prompt's own tokens scored (rows with echo=True), sent before any Delta."""

    logprobs: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class Done:
    finish_reason: str  # "stop" (end of turn or a stop string), "length" (max_tokens) or "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Prompt | Done | Failed


@dataclass
class Row:
    """One sequence to generate: a prompt, how to pick tokens, when to end, and where its events go."""

    prompt_ids: list[int]
    # 0 only scores the prompt (echo=True)
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # None: no log-probs; k >= 0: each token's log-prob and the k most likely alternatives
    logprobs: int | None = None
    # score the prompt tokens too (a Prompt event); needs every prompt position's logits, so it costs memory
    echo: bool = False
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
    progress = [_Progress(row, tokenizer, end_of_turn_ids(model, tokenizer)) for row in rows]
    generators = [_generator(row.seed, device) for row in rows]
    past = None
    # Only the last position's logits are read unless a row scores its prompt: the prompt pass then skips a
    # (rows x prompt x vocab) projection.
    last_only = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}
    keep = {} if any(r.echo for r in rows) else last_only
    with torch.no_grad():
        while True:
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past,
                        use_cache=True, **keep)
            if past is None:
                _score_prompts(out.logits, rows)
                for state in progress:
                    state.start()
                keep = last_only
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            chosen = [_pick(logits[i], row, generators[i]) if not state.done else pad
                      for i, (row, state) in enumerate(zip(rows, progress, strict=True))]
            for i, (state, token) in enumerate(zip(progress, chosen, strict=True)):
                if not state.done:
                    state.add(token, _scored(logits[i], token, state.row.logprobs))
            if all(state.done for state in progress):
                break
            ids = torch.tensor(chosen, device=device)[:, None]
            mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
            positions = positions[:, -1:] + 1


def _score_prompts(logits: torch.Tensor, rows: list[Row]) -> None:
    # Position t's logits predict token t + 1; the rows are left-padded, so row i's prompt ends at the last column.
    width = logits.shape[1]
    for i, row in enumerate(rows):
        if not row.echo:
            continue
        length = len(row.prompt_ids)
        scores = torch.log_softmax(logits[i, width - length: width - 1].float(), dim=-1)
        entries = [TokenLogprob(row.prompt_ids[0], None)]
        entries += [_entry(scores[t], row.prompt_ids[t + 1], row.logprobs or 0) for t in range(length - 1)]
        row.emit(Prompt(tuple(entries)))


def _scored(logits: torch.Tensor, token: int, top: int | None) -> TokenLogprob | None:
    return None if top is None else _entry(torch.log_softmax(logits, dim=-1), token, top)


def _entry(logprobs: torch.Tensor, token: int, top: int) -> TokenLogprob:
    best = ()
    if top:
        values, indices = logprobs.topk(top)
        best = tuple(zip(indices.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), best)


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


class _Progress:
    """One row's tokens and text so far, and how much of the text (and of its log-probs) has been sent."""

    def __init__(self, row: Row, tokenizer: Any, end_ids: set[int]) -> None:
        self.row, self.tokenizer, self.end_ids = row, tokenizer, end_ids
        self.tokens: list[int] = []
        self.pending: list[TokenLogprob] = []
        self.sent = 0
        self.done = False

    def start(self) -> None:
        # After the prompt pass: a row that only scores its prompt (max_tokens=0) is over.
        if self.row.max_tokens == 0:
            self._finish("", "length")

    def add(self, token: int, scored: TokenLogprob | None) -> None:
        if self.row.cancelled.is_set():
            return self._finish("", "cancelled")
        if scored is not None:
            # An end-of-turn token is reported too: a client scoring "prompt + 1 token" (lm-eval) counts on it.
            self.pending.append(scored)
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
            self._emit(text[self.sent:final])
            self.sent = final

    def _text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def _emit(self, text: str) -> None:
        self.row.emit(Delta(text, tuple(self.pending)))
        self.pending = []

    def _finish(self, text: str, reason: str) -> None:
        self.done = True
        if reason != "cancelled" and (len(text) > self.sent or self.pending):
            self._emit(text[self.sent:])
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
