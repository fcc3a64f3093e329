"""Talk to a tuned model: each turn goes through the model's own chat template with the whole conversation.

    python -m pipeline.tools.chat outputs/grpo/RUN                       # greedy replies, up to 256 new tokens
    python -m pipeline.tools.chat outputs/grpo/RUN temperature=0.7 max_new_tokens=512 system="You are terse."
    python -m pipeline.tools.chat outputs/grpo/RUN which=best            # the best evaluated step (<run>/best/)

Commands inside the chat: /reset forgets the conversation, /exit (or Ctrl-D) leaves. Input may be piped:
`echo "What is 2 + 3?" | python -m pipeline.tools.chat RUN` answers once and exits.

A run trained with tools (`env=...`, `stage.tools`) chats with them: a reply that calls a tool runs it under the
run's own limits and feeds the result back (shown as `tool> ...` lines), up to max_tool_calls calls per turn
(default: the run's env.max_tool_calling_iterations); tools=off chats without them, environment=NAME picks one of
several environments (pipeline/tools/chat_tools.py).

    python -m pipeline.tools.chat outputs/grpo/RUN web=true [port=8000 host=127.0.0.1]

chats in the browser instead: the page of `python -m pipeline.tools.serve` (system prompt, temperature and max
tokens are set on the page; max_new_tokens= is its default), running the run's tools as the terminal chat does
(shown as `tool> ...` lines; tools=off, max_tool_calls= and environment= as above). The URL is printed; a
browser opens only where there is a display.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import torch

from pipeline.config.user_errors import reported
from pipeline.tools.chat_tools import ChatTools, ChatToolsError, answer, run_tools
from pipeline.tools.lean_start import keep_unused_libraries_out
from pipeline.tools.options import flag, on_off, parse_options
from pipeline.tools.serve import run_server
from pipeline.tools.tuned import RunDirError, load_model_or_run
from pipeline.train.model.templates import NoChatTemplateError, prompt_ids, require_chat_template

OPTIONS = {"max_new_tokens": int, "temperature": float, "system": str, "which": str, "web": flag, "host": str,
           "port": int, "tools": on_off, "max_tool_calls": int, "environment": str}
WEB_ONLY, TERMINAL_ONLY = ("host", "port"), ("temperature", "system")


def reply(model: Any, tokenizer: Any, history: list[dict[str, str]], max_new_tokens: int, temperature: float) -> str:
    return generate_text(model, tokenizer, prompt_ids(tokenizer, history), max_new_tokens, temperature)


def generate_text(model: Any, tokenizer: Any, prompt: list[int], max_new_tokens: int, temperature: float) -> str:
    input_ids = torch.tensor([prompt], device=model.device)
    ids = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def chat(model: Any, tokenizer: Any, stdin: TextIO, stdout: TextIO, max_new_tokens: int = 256,
         temperature: float = 0.0, system: str | None = None, tools: ChatTools | None = None) -> list[dict[str, Any]]:
    """The read-reply loop, calling `tools` when given; returns the conversation (tests read it)."""
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    interactive = stdin.isatty()
    if tools is not None and tools.observation:  # the environment's opening, which the model reads too
        stdout.write(f"environment> {tools.observation}\n")
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
            if tools is not None:
                tools.reset()  # a new conversation is a new episode
            stdout.write("(conversation cleared)\n")
            if tools is not None and tools.observation:
                stdout.write(f"environment> {tools.observation}\n")
            continue
        if tools is None:
            history.append({"role": "user", "content": text})
            said = reply(model, tokenizer, history, max_new_tokens, temperature)
            history.append({"role": "assistant", "content": said})
        else:
            history.append({"role": "user", "content": tools.user_text(text)})
            said = answer(lambda prompt: generate_text(model, tokenizer, tokenizer(prompt, add_special_tokens=False)
                                                       ["input_ids"], max_new_tokens, temperature),
                          tokenizer, history, tools, show=lambda line: stdout.write(f"{line}\n"))
        stdout.write(f"assistant> {said}\n")
        stdout.flush()
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.chat", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run (its final/), or an export directory")
    parser.add_argument("options", nargs="*", help=f"key=value: {', '.join(OPTIONS)}")
    args = parser.parse_args(argv)
    opts = parse_options(args.options, OPTIONS)
    web, which, use_tools = opts.pop("web", False), opts.pop("which", "final"), opts.pop("tools", True)
    misplaced = [key for key in (TERMINAL_ONLY if web else WEB_ONLY) if key in opts]
    if misplaced:
        where = "are for the terminal chat (the page sets its own system prompt and sampling)" if web else \
            "need web=true"
        raise SystemExit(f"{', '.join(misplaced)}: {where}.")
    if web:
        return run_server(args.run_dir, open_page=True, max_tokens=opts.pop("max_new_tokens", 256), which=which,
                          tools=use_tools, **opts)
    calls, environment = opts.pop("max_tool_calls", None), opts.pop("environment", None)
    try:
        model, tokenizer = load_model_or_run(args.run_dir, which)
        require_chat_template(tokenizer, args.run_dir)
        tools = run_tools(args.run_dir, tokenizer, calls, environment) if use_tools else None
    except (RunDirError, NoChatTemplateError, ChatToolsError) as err:
        raise SystemExit(str(err)) from None
    if tools is not None:  # on stderr: piped output stays the answers alone
        print(f"tools: {', '.join(tools.functions)} (up to {tools.max_calls} calls per turn; tools=off to chat "
              "without them)", file=sys.stderr)
    chat(model, tokenizer, sys.stdin, sys.stdout, tools=tools, **opts)


if __name__ == "__main__":
    keep_unused_libraries_out(sys.argv[1:])  # before the model libraries load: no bitsandbytes a run did not use
    with reported():  # a user error: one block on stderr, exit 2
        main()
