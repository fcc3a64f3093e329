"""chat: the run's chat template, and the conversation kept across turns."""

from __future__ import annotations

import io
from pathlib import Path

import torch

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


def scripted(model, tokenizer) -> None:
    """The model's generate writes the reply tests/helpers/scripted_serve.py scripts for the prompt (a tool call
    when tools are offered, the answer once a result is back), as TRL's test_train_with_tools scripts it."""
    from tests.helpers.scripted_serve import scripted_reply

    def generate(input_ids, attention_mask=None, **kwargs):
        reply = scripted_reply(tokenizer.decode(input_ids[0])) or "no script"
        ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return torch.cat([input_ids, torch.tensor([ids], device=input_ids.device)], dim=1)

    model.generate = generate


def tool_chat(tool_run: Path, said: str, **kw):
    from pipeline.tools.chat import chat
    from pipeline.tools.chat_tools import run_tools
    from pipeline.tools.tuned import load_tuned

    model, tokenizer = load_tuned(tool_run)
    scripted(model, tokenizer)
    tools = run_tools(tool_run, tokenizer, **kw)
    out = io.StringIO()
    history = chat(model, tokenizer, io.StringIO(said), out, max_new_tokens=64, tools=tools)
    return history, out.getvalue().splitlines(), tools


def test_chat_runs_the_runs_own_tool_and_feeds_the_result_back(tool_run: Path) -> None:
    history, lines, tools = tool_chat(tool_run, "What is 2 + 3?\n")
    assert list(tools.functions) == ["calculate"] and tools.max_calls == 4  # env=calculator's, as trained
    # the real calculator ran (under the run's limits, counted) and the model read its result
    assert lines == ['tool> calculate({"expression": "2 + 3"}) -> 5', "assistant> The answer is 5."]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1]["tool_calls"][0]["function"] == {"name": "calculate", "arguments": {"expression": "2 + 3"}}
    assert tools.stats["calculate"].calls == 1 and tools.stats["calculate"].failures == 0


def test_a_fault_is_an_error_the_model_reads_and_calls_stop_at_the_cap(tool_run: Path) -> None:
    from tests.helpers.scripted_serve import BROKEN, CALL

    history, lines, tools = tool_chat(tool_run, "BAD ARGUMENT\n")
    # TRL's error text, from the limits' argument check, read by the model and counted as a failure
    assert lines[0].startswith("tool> calculate({\"expr\": \"2 + 3\"}) -> {'error': 'bad arguments for calculate")
    assert history[-1]["content"].startswith("The answer is {'error'") and tools.stats["calculate"].failures == 1

    history, _, tools = tool_chat(tool_run, "BROKEN\n")  # a malformed call runs nothing: shown as written
    assert history[-1] == {"role": "assistant", "content": BROKEN} and tools.stats["calculate"].calls == 0

    history, lines, tools = tool_chat(tool_run, "LOOP\n", max_calls=2)  # a model that never stops calling
    assert [line.split(" -> ")[1] for line in lines if line.startswith("tool>")] == ["5", "5"]
    assert history[-1] == {"role": "assistant", "content": CALL.format("2 + 3")}  # the last reply, as written
    assert tools.stats["calculate"].calls == 2


def test_the_cli_offers_the_runs_tools_unless_tools_off(tool_run: Path) -> None:
    on = run_tool("chat", str(tool_run), "max_new_tokens=4", stdin="hi\n", cwd=tool_run.parent)
    assert on.returncode == 0, on.stderr[-3000:]
    assert "tools: calculate (up to 4 calls per turn; tools=off" in on.stderr and on.stdout.startswith("assistant> ")
    off = run_tool("chat", str(tool_run), "max_new_tokens=4", "tools=off", stdin="hi\n", cwd=tool_run.parent)
    assert off.returncode == 0 and "tools:" not in off.stderr and off.stdout.startswith("assistant> ")
    bad = run_tool("chat", str(tool_run), "tools=maybe")
    assert bad.returncode != 0 and "tools='maybe': expected on or off" in bad.stderr
