"""Serve a tuned model over an OpenAI-compatible HTTP API, with a chat page for the browser.

    python -m pipeline.tools.serve outputs/grpo/RUN                    # its final/; http://127.0.0.1:8000/v1
    python -m pipeline.tools.serve outputs/grpo/RUN which=best port=8080
    python -m pipeline.tools.serve outputs/grpo/RUN/export             # an export, or any transformers model dir
    PIPELINE_API_KEY=... python -m pipeline.tools.serve RUN            # clients must send that key

Routes: /v1/models, /v1/chat/completions and /v1/completions (stream=true for server-sent events), /health,
/stats (batching counters) and the chat page at /. Concurrent requests are decoded together in padded batches
(max_batch=, batch_wait_ms=); temperature 0 or absent is greedy, `seed` makes sampling repeatable, `n` choices
are sampled in one batch, `logprobs` (chat: true + top_logprobs; completions: an int) and `echo` (the prompt's
own log-probs, what lm-evaluation-harness's loglikelihood tasks send) are served, and so are `tools` (OpenAI
tool_calls out, role=tool results back in, streamed too; serving/tool_calls.py). tools=on lets the chat page run
the run's own tools as the terminal chat does (serving/page_tools.py; off by default: a tool may run code; with
max_tool_calls= and environment= as in the chat). The model is named
<stage>-<run id> unless name= says otherwise. Binds 127.0.0.1 unless host= says otherwise: there is no TLS, so put
a proxy in front before exposing it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config.user_errors import reported
from pipeline.tools.lean_start import keep_unused_libraries_out
from pipeline.tools.options import on_off, parse_options

if TYPE_CHECKING:
    from pipeline.tools.serving.api import Served

OPTIONS = {"port": int, "host": str, "which": str, "name": str, "max_batch": int, "batch_wait_ms": float,
           "max_tokens": int, "tools": on_off, "max_tool_calls": int, "environment": str}
API_KEY_ENV = "PIPELINE_API_KEY"


def load_served(path: Path, which: str = "final", name: str | None = None, max_batch: int = 8,
                batch_wait_ms: float = 20.0, max_tokens: int = 256, tools: bool = False,
                max_tool_calls: int | None = None, environment: str | None = None) -> Served:
    """Load the model and start its batcher; the API key comes from the environment only; with `tools` the page
    runs the run's own tools."""
    # torch and transformers load here, not at import: main() checks the arguments first, in a second.
    from pipeline.tools.serving.page_tools import page_tools_of
    from pipeline.tools.tuned import load_model_or_run

    model, tokenizer = load_model_or_run(path, which)
    page_tools = page_tools_of(path, tokenizer, max_tool_calls, environment) if tools else None
    return make_served(model, tokenizer, name or default_name(path), max_batch, batch_wait_ms, max_tokens,
                       api_key=os.environ.get(API_KEY_ENV) or None, page_tools=page_tools)


def make_served(model: Any, tokenizer: Any, name: str, max_batch: int = 8, batch_wait_ms: float = 20.0,
                max_tokens: int = 256, api_key: str | None = None, page_tools: Any = None) -> Served:
    """A loaded model behind its batcher, under `name`."""
    from pipeline.tools.serving.api import Served
    from pipeline.tools.serving.batcher import Batcher

    context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    return Served(model_id=name, tokenizer=tokenizer,
                  batcher=Batcher(model, tokenizer, max_batch=max_batch, wait_s=batch_wait_ms / 1000),
                  context=context, default_max_tokens=max_tokens, api_key=api_key, page_tools=page_tools)


def serve(served: Served, host: str = "127.0.0.1", port: int = 8000, open_page: bool = False) -> None:
    """Run the HTTP server until interrupted; open_page opens the chat page in a browser where there is a display."""
    import uvicorn

    from pipeline.tools.serving.api import create_app

    key_note = f" (API key required: {API_KEY_ENV} is set)" if served.api_key else ""
    print(f"serving {served.model_id!r} at http://{host}:{port}/v1{key_note}", flush=True)
    print(f"chat page: http://{host}:{port}/", flush=True)
    if open_page and _has_display():
        # Shortly after start: the model is loaded, so uvicorn listens within a second.
        threading.Timer(1.0, webbrowser.open, args=(f"http://{host}:{port}/",)).start()
    try:
        uvicorn.run(create_app(served), host=host, port=port, log_level="info")
    finally:
        served.batcher.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.serve", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a finished run (final/ or best/), or an export / model directory")
    parser.add_argument("options", nargs="*", help=f"key=value: {', '.join(OPTIONS)}")
    args = parser.parse_args(argv)
    opts = parse_options(args.options, OPTIONS)
    run_server(args.path, **opts)


def run_server(path: Path, host: str = "127.0.0.1", port: int = 8000, open_page: bool = False, **load: object) -> None:
    """Load and serve until interrupted (the CLI here and `python -m pipeline.tools.chat RUN web=true`)."""
    # Checked before the heavy imports, so a typo costs no model load.
    if load.get("which", "final") not in ("best", "final"):
        raise SystemExit(f"which={load['which']!r}: expected best or final.")
    if not path.is_dir():
        raise SystemExit(f"{path}: no such directory. Fix: give a run directory or an export directory.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from pipeline.tools.chat_tools import ChatToolsError
    from pipeline.tools.tuned import RunDirError

    try:
        served = load_served(path, **load)
    except (RunDirError, ChatToolsError) as err:
        raise SystemExit(str(err)) from None
    serve(served, host, port, open_page)


def _has_display() -> bool:
    # On a server (ssh, CI) there is no browser to open: the printed URL is the way in.
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def default_name(path: Path) -> str:
    """<stage>-<run id> for a run (or its export, final/ or best/), else the directory's name. Never a bare number:
    clients that parse their arguments (lm-evaluation-harness's model_args) turn a run id like 20261202_193751
    into an int, and the model name they send back no longer matches."""
    path = path.resolve()
    run = path.parent if path.name in ("export", "export_best", "final", "best") else path
    stage = _stage_of(run)
    name = f"{stage}-{run.name}" if stage else path.name
    return name if not _numeric(name) else f"model-{name}"


def _stage_of(run: Path) -> str | None:
    from omegaconf import OmegaConf

    from pipeline.config.run_dir import RunDir

    config = RunDir(run).config
    try:
        return str(OmegaConf.select(OmegaConf.load(config), "stage.name")) if config.is_file() else None
    except Exception:  # an unreadable config only costs the nicer name
        return None


def _numeric(name: str) -> bool:
    try:
        float(name)  # also reads "20261202_193751", underscores and all, as Python's int() does
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    keep_unused_libraries_out(sys.argv[1:])  # before the model libraries load: no bitsandbytes a run did not use
    with reported():  # a user error: one block on stderr, exit 2
        main()
