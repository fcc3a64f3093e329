"""GRPO with env=calculator end to end, on the tiny model with the shipped qwen2.5 template.

In process, through the path run.py dispatches to (compose -> plan_run -> run_stage), with the model's `generate`
scripted to emit tool calls (as TRL's own test_train_with_tools does): TRL's loop parses each call through the
response template we set, runs the calculator under our limits, feeds the result back, and the run counts each call
(metrics.jsonl, summary.json) and keeps tool-result tokens out of the loss (tool_mask). In a subprocess, the plain
run.py command plays env=guess_number: a multi-turn environment on placeholder rows, scored as reward.terms' own
`environment` term (not under TRL's class-name reward)."""

from __future__ import annotations

import json
import re

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoTokenizer, Qwen3ForCausalLM

from pipeline.config.plan import plan_run
from pipeline.train.levers.grpo_trainer import LeveredGRPOTrainer
from pipeline.train.trl_surface import reached
from tests.helpers.runs import REPO, TINY, compose_config, run_pipeline
from tests.helpers.scripted_tools import attended

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"
SMALL = [*TINY, "stage.batch_size=8", "stage.num_generations=4", "model.chat_template=qwen2.5", "env=calculator"]
CALL = '<tool_call>\n{{"name": "calculate", "arguments": {{"{key}": "{a} + {b}"}}}}\n</tool_call><|im_end|>'


def scripted_generate(tokenizer):
    """A `generate` that calls the calculator on the row's own problem (every fourth row with a wrong argument
    name: a failed call), then answers with the tool's result once it has one."""
    calls = {"n": 0}

    def generate(self, input_ids, attention_mask=None, **kwargs):
        replies = []
        for ids in attended(input_ids, attention_mask):
            text = tokenizer.decode(ids, skip_special_tokens=False)
            results = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.DOTALL)
            if results:
                replies.append(f"{results[-1] if results[-1].isdigit() else 'unknown'}<|im_end|>")
                continue
            a, b = re.findall(r"What is (\d+) \+ (\d+)", text)[-1]
            calls["n"] += 1
            replies.append(CALL.format(key="expr" if calls["n"] % 4 == 0 else "expression", a=a, b=b))
        ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
        width = max(map(len, ids))
        padded = [row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids]
        return torch.cat([input_ids, torch.tensor(padded, device=input_ids.device)], dim=1)

    return generate


def test_scripted_tool_calls_run_are_counted_and_masked(tmp_path, monkeypatch) -> None:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    monkeypatch.setattr(Qwen3ForCausalLM, "generate", scripted_generate(tokenizer))
    batches = []
    compute_loss = LeveredGRPOTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        batches.append({k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(LeveredGRPOTrainer, "compute_loss", recording)
    run_dir = tmp_path / "run"
    overrides = [*SMALL, "stage.max_completion_length=192", "logging.samples_every=1", f"output_dir={run_dir}",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    from pipeline.train.stages import run_stage

    reused = reached["reused_turn"]
    run_stage(plan_run(compose_config(overrides), run_dir))
    # each step's follow-up turn continued its first turn's rows (levers/turn_reuse.py): the histories TRL's loop
    # builds by concatenation extend what generate held
    assert reached["reused_turn"] == reused + 2

    # counted: 2 steps x 8 rollouts, one call each, every fourth with a bad argument
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tools"] == {"calculate": {"calls": 16, "failures": 4, "timeouts": 0, "truncated": 0}}
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "tools/calculate/calls" in row]
    assert [row["tools/calculate/calls"] for row in steps] == [8.0, 16.0]
    assert steps[-1]["tools/calculate/failures"] == 4.0
    assert steps[-1]["tools/failure_frequency"] == 0.25  # TRL's own count agrees
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/tools/calculate/failures")] == [2.0, 4.0]  # TensorBoard scalars
    # the calculator's answers were read back: 3 of 4 rollouts answer right
    assert steps[-1]["rewards/correctness/mean"] == 0.75

    # masked: tool-result tokens (the calculator's answer, or the error the model reads) are in the completion with
    # tool_mask 0, the model's own tokens with 1
    batch = batches[0]
    assert "tool_mask" in batch
    for row in range(batch["completion_ids"].size(0)):
        ids, keep = batch["completion_ids"][row], batch["completion_mask"][row].bool()
        tool = keep & (batch["tool_mask"][row] == 0)
        own = tokenizer.decode(ids[keep & ~tool])
        result = tokenizer.decode(ids[tool])
        assert "<tool_response>" in result and "<tool_response>" not in own
        assert own.startswith("<tool_call>")
        assert ("error" in result) == ('"expr"' in own)  # a bad call's error message is a tool result too

    # seen: the completions table holds whole episodes (the call, the marked result, the answer) with their turns
    rows = [json.loads(line) for line in (run_dir / "samples" / "completions.jsonl").read_text().splitlines()]
    assert rows and all(row["turns"] == 2 and row["tool_calls"] == 1 for row in rows)
    first = rows[0]["completion"].splitlines()
    assert first[0].startswith("-> call calculate(") and first[1].startswith("[tool result: calculate] ")
    assert [e.value for e in events.Scalars("trajectory/turns_mean")] == [2.0, 2.0]
    assert [e.value for e in events.Scalars("trajectory/tool_calls_mean")] == [1.0, 1.0]
    assert "| turns | tool_calls |" in events.Tensors("completions/text_summary")[0].tensor_proto.string_val[0].decode()


def test_guess_number_runs_through_run_py_and_is_scored_as_a_reward_term(tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline([*TINY, "stage.batch_size=8", "stage.num_generations=4", "model.chat_template=qwen2.5",
                         "stage.max_completion_length=24", "env=guess_number", "env.placeholder_rows=16",
                         f"output_dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "env=guess_number: tools none, environment GuessNumber" in console
    # the game writes the rows: the data group is never read, and TRL's "experimental" notice is not repeated
    assert "env guess_number writes each prompt in reset(): 16 placeholder rows" in console
    assert "data arithmetic" not in console and "experimental feature" not in console
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "loss" in row]
    assert len(steps) == 2
    assert all("rewards/environment/mean" in row for row in steps)
    assert not any(key.startswith("rewards/GuessNumber") for row in steps for key in row)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tools"] == {} or set(summary["tools"]) == {"guess"}
