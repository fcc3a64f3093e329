"""chat: the run's chat template, and the conversation kept across turns."""

from __future__ import annotations

import io
from pathlib import Path

from tests.helpers.runs import run_tool


def test_chat_uses_the_template_and_keeps_the_conversation(lora_run: Path) -> None:
    from pipeline.tools.chat import chat
    from pipeline.tools.tuned import load_tuned
    from pipeline.train.observe.heldout import generate_greedy

    model, tokenizer = load_tuned(lora_run)
    out = io.StringIO()
    history = chat(model, tokenizer, io.StringIO("What is 2 + 3?\nAnd 4 + 4?\n/reset\nhi\n"), out, max_new_tokens=6)
    first = generate_greedy(model, tokenizer, [[{"role": "user", "content": "What is 2 + 3?"}]], 6)[0].strip()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"assistant> {first}" and "(conversation cleared)" in lines
    # After /reset only the last exchange remains.
    assert [m["role"] for m in history] == ["user", "assistant"] and history[0]["content"] == "hi"

    proc = run_tool("chat", str(lora_run), "max_new_tokens=6", stdin="What is 2 + 3?\n", cwd=lora_run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"assistant> {first}"
