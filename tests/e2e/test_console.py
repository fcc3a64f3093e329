"""The console of a tiny GRPO run through pipeline/run.py: one line per logging step (no raw metrics dict, no
progress bar), the end-of-run block, and none of the third-party lines that do not apply to such a run -- nor in
the tool the block points at next (evaluate, which loads the LoRA adapter through peft)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers.runs import TINY, run_pipeline, run_tool

STEPS = 3
LINE = re.compile(r"^step (\d+)/3 \| loss \S+ \| reward [\d.]+ \(correctness [\d.]+\) \| entropy \S+ \| "
                  r"[\d.]+ s/step \| ETA \d+(m\d\ds)?s? \| [\d,]+ tok/s$")
NOISE = ("Setting accelerator to CPU",  # deepspeed imported by a run without DeepSpeed
         "gemm_4bit_forward",  # bitsandbytes imported by a run without quantization
         "`gradient_checkpointing` is deprecated",  # our own TrainingArguments argument
         "`is_gradient_checkpointing` is deprecated")  # read by peft when it wraps the model in LoRA


def test_tiny_grpo_console(tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline([*TINY, "stage=grpo", f"max_steps={STEPS}", f"output_dir={run_dir}",
                         f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, both = proc.stdout, proc.stdout + proc.stderr
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert [int(LINE.match(line).group(1)) for line in steps if LINE.match(line)] == [1, 2, 3], steps
    assert len(steps) == STEPS
    assert "{'loss'" not in both and "'train_runtime'" not in both and "s/it]" not in both  # no dict, no bar
    for noise in NOISE:
        assert noise not in both, noise
    block = out[out.index("== grpo finished: 3 steps in "):]
    assert "held-out accuracy: 0.0% -> " in block and " 8 problems)" in block and "reward: " in block
    assert f"model: {run_dir / 'final'} (LoRA adapter on tiny" in block
    for tool in ("chat", "serve", "export"):
        assert f"python -m pipeline.tools.{tool} {run_dir}" in block
    # the full metrics are where they were: metrics.jsonl holds every key of every step
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"rewards/correctness/mean", "completions/clipped_ratio", "perf/tokens_per_s"} <= set(rows[0])
    assert "step 1/3 | loss" in (run_dir / "run.log").read_text()  # the log file keeps the lines too
    evaluated = run_tool("evaluate", str(run_dir), "limit=2", "max_new_tokens=4")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    for noise in NOISE:
        assert noise not in evaluated.stdout + evaluated.stderr, noise
