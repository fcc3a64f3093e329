"""What a tool returned, as the text the model sees: text kept, JSON-able values as JSON, the rest refused, and
the whole cut to `max_output_tokens` with the cut said in the trajectory.

    text = as_text(value)                                # None: not text or JSON (a fault)
    text, cut = truncate(text, 512, tokenizer)           # "...[output truncated: 10.0 MB -> 512 tokens]"

Tokens are counted with the run's tokenizer when there is one, characters otherwise. The text is cut to 16
characters per wanted token before tokenizing, so a 10 MB result is never tokenized whole.
"""

from __future__ import annotations

import json
from typing import Any

_TRIM_CHARS_PER_TOKEN = 16  # a token of more than 16 characters is rare; past that the text is cut anyway


def truncate(text: str, max_tokens: int | None, tokenizer: Any = None) -> tuple[str, bool]:
    """``text`` cut to ``max_tokens`` tokens (characters without a tokenizer), the cut said in a last line."""
    if max_tokens is None:
        return text, False
    if tokenizer is None:
        if len(text) <= max_tokens:
            return text, False
        return f"{text[:max_tokens]}\n...[output truncated: {_size(text)} -> {max_tokens} characters]", True
    head = text[: max_tokens * _TRIM_CHARS_PER_TOKEN]
    ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens and len(head) == len(text):
        return text, False
    kept = ids[:max_tokens]
    return f"{tokenizer.decode(kept)}\n...[output truncated: {_size(text)} -> {len(kept)} tokens]", True


def as_text(value: Any) -> str | None:
    """A tool's return value as text; None when it is neither text nor JSON-serialisable."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates would break the tokenizer
    if value is None:
        return "(no output)"
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None


def is_content_blocks(value: Any) -> bool:
    """TRL's multimodal tool result: a list of {"type": "text" | "image", ...} parts, passed through as it is."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(p, dict) and p.get("type") in ("text", "image") for p in value))


def _size(text: str) -> str:
    n = len(text.encode("utf-8", "replace"))
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} KB" if n >= 1_000 else f"{len(text)} characters"
