"""Registry entries through pipeline/run.py: 2 steps on model=tiny for each stage a LLaMA-Factory entry feeds, with
the command line a user types (comma-separated data.dataset). Real TRL trainers in a subprocess."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.data import LLAMAFACTORY as LF
from tests.helpers.runs import run_pipeline

BASE = ["model=tiny", "max_steps=2", "data=llamafactory", f"data.dataset_dir={LF}", "stage.eval_max_new_tokens=4",
        "hw.eval_batch=4"]
CASES = {
    # multi-turn sharegpt + tool calls + alpaca with history, loss on every assistant reply, Qwen2.5-style template
    "sft": ["stage=sft", "data.dataset=alpaca_en_demo,sharegpt_chat,tool_chat,openai_chat",
            "model.chat_template=qwen2.5", "stage.batch_size=4"],
    "dpo": ["stage=dpo", "data.dataset=dpo_alpaca,dpo_sharegpt", "stage.batch_size=4"],
    # kto_tag: desirable / undesirable replies, alpaca and sharegpt
    "kto": ["stage=kto", "data.dataset=kto_alpaca,kto_sharegpt", "stage.batch_size=4"],
    "grpo": ["stage=grpo", "data.dataset=qa_answers", "data.eval_size=1", "stage.batch_size=4",
             "stage.num_generations=2", "stage.max_completion_length=4", "reward=shaped"],
}
SOURCES = {"sft": {"alpaca_en_demo": 4, "sharegpt_chat": 4, "tool_chat": 4, "openai_chat": 4},
           "dpo": {"dpo_alpaca": 4, "dpo_sharegpt": 4}, "kto": {"kto_alpaca": 4, "kto_sharegpt": 4},
           "grpo": {"qa_answers": 4}}  # before 1 row is held out


# dpo and grpo in -m slow (the default suite's time): sft and kto cover the registry's conversational and
# labelled formats end to end; every entry's rows are checked without training in tests/test_data_registry.py
@pytest.mark.parametrize("stage", [pytest.param(s, marks=pytest.mark.slow) if s in ("dpo", "grpo") else s
                                   for s in sorted(CASES)])
def test_registry_entries_train_each_stage(stage: str, tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline([*BASE, *CASES[stage], f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["rows_per_source"] == SOURCES[stage]
    assert math.isfinite(summary["metrics"]["train_loss"])
    if stage == "sft":  # the template travels with the trained model (chat, export)
        template = (run_dir / "final" / "chat_template.jinja").read_text()
        assert "<tools>" in template and "<tool_call>" in template
