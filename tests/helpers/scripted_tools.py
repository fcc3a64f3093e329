"""A tiny model's `generate` scripted to use the calculator (as TRL's own test_train_with_tools scripts it), decided
by the arithmetic prompt alone, so a held-out episode and a training rollout of the same problem make the same calls.

    monkeypatch.setattr(Qwen3ForCausalLM, "generate", scripted_generate(tokenizer))
    right = expected_correct(a)      # whether the scripted episode of "What is a + b?" ends on the right answer
"""

from __future__ import annotations

import re

import torch


def attended(input_ids, attention_mask):
    """Each row's tokens as the model reads them: padding (at the left, or a hole after a shared opening) left out."""
    if attention_mask is None:
        return list(input_ids)
    return [ids[mask.bool()] for ids, mask in zip(input_ids, attention_mask, strict=True)]


CALL = '<tool_call>\n{{"name": "calculate", "arguments": {{"{key}": "{expr}"}}}}\n</tool_call><|im_end|>'


def scripted_generate(tokenizer):
    """Calls calculate(a + b) (an odd `a`: with a wrong argument name, a failed call); a multiple of 3 as `a` then
    doubles the result in a second call; after the last result, answers with it. Decided by the prompt alone."""

    def generate(self, input_ids, attention_mask=None, **kwargs):
        replies = []
        for ids in attended(input_ids, attention_mask):
            text = tokenizer.decode(ids, skip_special_tokens=False)
            a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)", text)[-1])
            results = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.DOTALL)
            if results and (len(results) == 2 or a % 3 or not results[-1].isdigit()):
                replies.append(f"{results[-1] if results[-1].isdigit() else 'unknown'}<|im_end|>")
            elif results:
                replies.append(CALL.format(key="expression", expr=f"{results[-1]} * 2"))
            else:
                replies.append(CALL.format(key="expr" if a % 2 else "expression", expr=f"{a} + {b}"))
        ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
        width = max(map(len, ids))
        padded = [row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids]
        return torch.cat([input_ids, torch.tensor(padded, device=input_ids.device)], dim=1)

    return generate


def expected_correct(a: int) -> bool:
    """One good call (an even `a` that is not a multiple of 3) answers a + b; the others do not."""
    return a % 2 == 0 and a % 3 != 0


GUESS = '<tool_call>\n{{"name": "guess", "arguments": {{"number": {0}}}}}\n</tool_call><|im_end|>'


def scripted_bisection(tokenizer):
    """A `generate` that plays guess_number by bisection from the rules' range and the game's higher/lower hints,
    and says so once the game answers "Correct!": it finds any secret in 1..100 within 7 guesses."""

    def generate(self, input_ids, attention_mask=None, **kwargs):
        replies = []
        for ids in attended(input_ids, attention_mask):
            text = tokenizer.decode(ids, skip_special_tokens=False)
            low, high = map(int, re.findall(r"between (\d+) and (\d+)", text)[0])  # the rules' range
            guesses = [int(g) for g in re.findall(r'"number": (\d+)', text)]
            hints = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.DOTALL)
            if hints and hints[-1].startswith("Correct"):
                replies.append("Found it.<|im_end|>")
                continue
            for guess, hint in zip(guesses, hints, strict=False):
                low, high = (guess + 1, high) if hint.startswith("higher") else (low, guess - 1)
            replies.append(GUESS.format((low + high) // 2))
        ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
        width = max(map(len, ids))
        padded = [row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids]
        return torch.cat([input_ids, torch.tensor(padded, device=input_ids.device)], dim=1)

    return generate
