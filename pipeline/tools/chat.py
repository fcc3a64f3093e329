"""Talk to a tuned model: each turn goes through the model's own chat template with the whole conversation.

    python -m pipeline.tools.chat outputs/grpo/RUN                       # greedy replies, up to 256 new tokens
    python -m pipeline.tools.chat outputs/grpo/RUN temperature=0.7 max_new_tokens=512 system="You are terse."
    python -m pipeline.tools.chat outputs/grpo/RUN which=best            # the best evaluated step (<run>/best/)

Commands inside the chat: /reset forgets the conversation, /exit (or Ctrl-D) leaves. Input may be piped:
`echo "What is 2 + 3?" | python -m pipeline.tools.chat RUN` answers once and exits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.tools.tuned import RunDirError, load_tuned

OPTIONS = {"max_new_tokens": int, "temperature": float, "system": str, "which": str}


def reply(model: Any, tokenizer: Any, history: list[dict[str, str]], max_new_tokens: int, temperature: float) -> str:
    ids = tokenizer.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = {k: v.to(model.device) for k, v in ids.items()}
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
    opts = {}
    for pair in args.options:
        key, sep, value = pair.partition("=")
        if not sep or key not in OPTIONS:
            parser.error(f"unknown option {pair!r}: use key=value with key one of {', '.join(OPTIONS)}.")
        opts[key] = OPTIONS[key](value)
    model, tokenizer = _load(args.run_dir, opts.pop("which", "final"))
    if tokenizer.chat_template is None:
        raise SystemExit(f"{args.run_dir}: the tokenizer has no chat template, so turns cannot be formatted.")
    chat(model, tokenizer, sys.stdin, sys.stdout, **opts)


def _load(path: Path, which: str = "final") -> tuple[Any, Any]:
    if (path / "config.json").is_file():
        # An export (python -m pipeline.tools.export): a plain transformers model directory.
        return AutoModelForCausalLM.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))
    try:
        return load_tuned(path, which=which)
    except RunDirError as err:
        raise SystemExit(str(err)) from None


if __name__ == "__main__":
    main()
