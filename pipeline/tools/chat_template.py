"""Conversations into prompt token ids through the model's own chat template: one path for the terminal chat,
the server and held-out generation, so the three see the same prompt for the same conversation."""

from __future__ import annotations

from typing import Any


class NoChatTemplateError(ValueError):
    """The tokenizer carries no chat template, so turns cannot be formatted."""


def require_chat_template(tokenizer: Any, where: object) -> None:
    if tokenizer.chat_template is None:
        raise NoChatTemplateError(f"{where}: the tokenizer has no chat template, so turns cannot be formatted. "
                                  "Fix: use a chat (instruct) model, or send raw text to /v1/completions.")


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the conversation followed by the assistant's turn opening."""
    # Rendered then tokenized without special tokens, as held-out generation does (train/heldout.py): the template
    # already writes them, and a tokenizer that adds BOS would double it.
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
