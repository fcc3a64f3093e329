"""Talk to a tuned model: each turn goes through the model's own chat template with the whole conversation.

    python -m pipeline.tools.chat outputs/grpo/RUN                       # greedy replies, up to 256 new tokens
    python -m pipeline.tools.chat outputs/grpo/RUN temperature=0.7 max_new_tokens=512 system="You are terse."
    python -m pipeline.tools.chat outputs/grpo/RUN which=best            # the best evaluated step (<run>/best/)

Commands inside the chat: /reset forgets the conversation, /exit (or Ctrl-D) leaves. Input may be piped:
`echo "What is 2 + 3?" | python -m pipeline.tools.chat RUN` answers once and exits.

    python -m pipeline.tools.chat outputs/grpo/RUN web=true [port=8000 host=127.0.0.1]

chats in the browser instead: the page of `python -m pipeline.tools.serve` (system prompt, temperature and max
tokens are set on the page; max_new_tokens= is its default). The URL is printed; a browser opens only where
there is a display.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import torch

from pipeline.config.user_errors import reported
from pipeline.tools.options import flag, parse_options
from pipeline.tools.serve import run_server
from pipeline.tools.tuned import RunDirError, load_model_or_run
from pipeline.train.model.templates import NoChatTemplateError, prompt_ids, require_chat_template

OPTIONS = {"max_new_tokens": int, "temperature": float, "system": str, "which": str, "web": flag, "host": str,
           "port": int}
WEB_ONLY, TERMINAL_ONLY = ("host", "port"), ("temperature", "system")


def reply(model: Any, tokenizer: Any, history: list[dict[str, str]], max_new_tokens: int, temperature: float) -> str:
    input_ids = torch.tensor([prompt_ids(tokenizer, history)], device=model.device)
    ids = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def chat(model: Any, tokenizer: Any, stdin: TextIO, stdout: TextIO, max_new_tokens: int = 256,
         temperature: float = 0.0, system: str | None = None) -> list[dict[str, str]]:
    """The read-reply loop; returns the conversation (tests read it)."""
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    interactive = stdin.isatty()
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "/exit":
            break
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history = list(start)
            stdout.write("(conversation cleared)\n")
            continue
        history.append({"role": "user", "content": text})
        answer = reply(model, tokenizer, history, max_new_tokens, temperature)
        history.append({"role": "assistant", "content": answer})
        stdout.write(f"assistant> {answer}\n")
        stdout.flush()
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.chat", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run (its final/), or an export directory")
    parser.add_argument("options", nargs="*", help=f"key=value: {', '.join(OPTIONS)}")
    args = parser.parse_args(argv)
    opts = parse_options(args.options, OPTIONS)
    web, which = opts.pop("web", False), opts.pop("which", "final")
    misplaced = [key for key in (TERMINAL_ONLY if web else WEB_ONLY) if key in opts]
    if misplaced:
        where = "are set on the page in web mode" if web else "need web=true"
        raise SystemExit(f"{', '.join(misplaced)}: {where}.")
    if web:
        return run_server(args.run_dir, open_page=True, max_tokens=opts.pop("max_new_tokens", 256), which=which,
                          **opts)
    try:
        model, tokenizer = load_model_or_run(args.run_dir, which)
        require_chat_template(tokenizer, args.run_dir)
    except (RunDirError, NoChatTemplateError) as err:
        raise SystemExit(str(err)) from None
    chat(model, tokenizer, sys.stdin, sys.stdout, **opts)


if __name__ == "__main__":
    with reported():  # a user error: one block on stderr, exit 2
        main()
