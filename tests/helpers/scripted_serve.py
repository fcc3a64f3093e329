"""`python -m pipeline.tools.serve` with a scripted model: the real server process, app, batcher and decode loop,
but the tiny model's logits pinned to a reply chosen from the prompt, so it writes tool calls a random model never
would (TRL's test_train_with_tools scripts `generate` the same way). Prompts the script has no reply for get the
model's own tokens.

    python -m tests.helpers.scripted_serve RUN_DIR [serve's key=value options]     # started by tests.helpers.servers

tools=on (with max_tool_calls=, environment=) lets the chat page run the run's own tools, as serve's does.

What it replies (the prompt as the chat template rendered it):
- a tool result in the last turn: "The answer is <result>." if the earlier call and its result were rendered as
  the qwen2.5 template writes them, else "RENDERED WRONG";
- tools offered and "LOOP" anywhere in the prompt: a call, whatever came before (a model that never stops calling);
- tools offered and "BROKEN" in the question: a tool call whose JSON is cut off (malformed);
- tools offered and "BAD ARGUMENT" in the question: a call with an argument calculate does not take;
- tools offered and "TWO" in the question: two calls; otherwise with tools offered: one calculate("2 + 3") call.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import torch

CALL = '<tool_call>\n{{"name": "calculate", "arguments": {{"expression": "{0}"}}}}\n</tool_call>'
BROKEN = '<tool_call>\n{"name": "calculate", "arguments": {"expression": \n</tool_call>'
BAD_ARGUMENT = '<tool_call>\n{"name": "calculate", "arguments": {"expr": "2 + 3"}}\n</tool_call>'


def scripted_reply(prompt: str) -> str | None:
    """The reply for a rendered prompt, or None: the model's own."""
    last = prompt.rsplit("<|im_start|>", 2)[-2] if prompt.count("<|im_start|>") >= 2 else prompt
    if "<tools>" in prompt and "LOOP" in prompt:
        return CALL.format("2 + 3")
    result = re.search(r"<tool_response>\n(.*?)\n</tool_response>", last, re.DOTALL)
    if result:
        rendered = any(call in prompt for call in (CALL.format("2 + 3"), BAD_ARGUMENT))
        return f"The answer is {result.group(1)}." if rendered else "RENDERED WRONG"
    if "<tools>" not in prompt:
        return None
    if "BAD ARGUMENT" in last:
        return BAD_ARGUMENT
    if "BROKEN" in last:
        return BROKEN
    if "TWO" in last:
        return f"Two calls.\n{CALL.format('2 + 3')}\n{CALL.format('4 * 4')}"
    return CALL.format("2 + 3")


class Scripted(torch.nn.Module):
    """The model, with each row's next-token logits forced to its scripted reply (then end of turn)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__()
        self.inner, self.tokenizer = model, tokenizer
        self.targets: list[list[int] | None] = []
        self.step = 0

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def config(self) -> Any:
        return self.inner.config

    @property
    def generation_config(self) -> Any:
        return self.inner.generation_config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, past_key_values: Any = None,
                logits_to_keep: int = 0, **kwargs: Any) -> Any:
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                         logits_to_keep=logits_to_keep, **kwargs)
        if past_key_values is None:  # the prompt pass of a new batch: pick each row's script
            self.step = 0
            self.targets = []
            for ids, mask in zip(input_ids, attention_mask, strict=True):
                reply = scripted_reply(self.tokenizer.decode(ids[mask.bool()]))
                self.targets.append(None if reply is None else
                                    self.tokenizer(reply, add_special_tokens=False)["input_ids"]
                                    + [self.tokenizer.eos_token_id])
        for row, target in enumerate(self.targets):
            if target is not None:
                token = target[min(self.step, len(target) - 1)]
                out.logits[row, -1, :] = -1e4
                out.logits[row, -1, token] = 1e4
        self.step += 1
        return out


def main(argv: list[str]) -> None:
    from pipeline.tools import serve
    from pipeline.tools.options import parse_options
    from pipeline.tools.serving.page_tools import page_tools_of
    from pipeline.tools.tuned import load_model_or_run

    path, opts = Path(argv[0]), parse_options(argv[1:], serve.OPTIONS)
    model, tokenizer = load_model_or_run(path)
    page_tools = page_tools_of(path, tokenizer, opts.pop("max_tool_calls", None), opts.pop("environment", None)) \
        if opts.pop("tools", False) else None
    served = serve.make_served(Scripted(model, tokenizer), tokenizer, opts.pop("name", None) or "scripted",
                               max_batch=opts.pop("max_batch", 8), batch_wait_ms=opts.pop("batch_wait_ms", 20.0),
                               page_tools=page_tools)
    serve.serve(served, host=opts.pop("host", "127.0.0.1"), port=opts.pop("port", 8000))


if __name__ == "__main__":
    main(sys.argv[1:])
