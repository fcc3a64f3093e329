"""Every experiment runs 2 steps on the tiny model through pipeline/run.py, its data pointed at a small fixture and
its lengths and batches small; a chain resumes at its first unfinished stage.

Smoke times per experiment (2 CPU cores, incl. ~8 s of imports per process) are in the README "Experiments".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.conf import EXPERIMENTS
from tests.helpers.data import DATA
from tests.helpers.experiments import CHAIN_SMALL, SMOKE
from tests.helpers.runs import run_pipeline, scalars


def test_every_experiment_has_a_smoke_run() -> None:
    assert sorted(SMOKE) == EXPERIMENTS


def _check_run_dir(run_dir: Path, steps: int) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == steps
    losses = scalars(run_dir)["train/loss"]
    assert len(losses) == steps and all(math.isfinite(v) for v in losses)
    assert (run_dir / "final").is_dir() and not (run_dir / "final.partial").exists()
    return summary


# Every recipe composes and validates by default (above); these run 2 steps only with -m slow (the default suite's
# time): their stage/format/reward combination runs by default in another recipe or an e2e test.
SLOW_SMOKE = {"gsm8k_grpo_qwen2.5_1.5b", "gsm8k_grpo_python_qwen2.5_1.5b", "s1k_grpo_qwen3_1.7b",
              "s1k_group_pref_qwen3_1.7b", "medical_sft_then_grpo_qwen3", "huanhuan_sft", "zhihu_dpo",
              # QLoRA GRPO: test_stages.py, and an SFT -> GRPO chain: calculator_sft_then_grpo_smol
              "medical_sft_then_grpo_qwen3_qlora"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_SMOKE else n
                                  for n in EXPERIMENTS])
def test_experiment_runs_two_steps_on_the_tiny_model(name: str, tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        [f"experiment={name}", "model=tiny", "max_steps=2", "hw.eval_batch=8", *SMOKE[name],
         f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
        cwd=tmp_path, OMP_NUM_THREADS="2",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    if name.startswith(("medical", "zhihu", "calculator", "guess_number")):
        first, second = summary["stages"]
        assert summary["steps"] == 4 and second["final_dir"] == summary["final_dir"]
        _check_run_dir(run_dir / "1_sft", 2)
        _check_run_dir(run_dir / f"2_{summary['stage'].split('_')[-1]}", 2)
        # the second stage started from the first one's adapter
        assert f"from {run_dir / '1_sft' / 'final'}" in proc.stdout + proc.stderr
        return
    _check_run_dir(run_dir, 2)
    if name == "mcq_grpo_qlora":
        assert summary["dropped_by_reason"] == {"empty field 'question'": 1, "correct_answer not A-D": 1}
        lines = (run_dir / "predictions.csv").read_text().splitlines()
        assert lines[0] == "id,answer" and len(lines) == 2 and lines[1].split(",")[0] in {"q1", "q2", "q4", "q6"}
    if name.startswith("gsm8k"):
        assert summary["dropped_rows"] == 1 and summary["eval_problems"] == 1
    if name == "gsm8k_grpo_smol":
        # one curve per reward term, besides the weighted total
        logged = scalars(run_dir)
        assert all(f"train/rewards/{t}/mean" in logged for t in ("xmlcount", "soft_format", "int_answer",
                                                                  "correctness"))


def test_chain_resumes_at_the_first_unfinished_stage_and_hands_over_a_full_model(tmp_path: Path,
                                                                                 model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["stage=sft_then_dpo", "model=tiny", "peft=full", "data=jsonl", f"data.path={DATA / 'preference.jsonl'}",
            "max_steps=1", *CHAIN_SMALL, "stage.dpo.batch_size=2", "stage.dpo.max_length=128",
            f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"]
    first = run_pipeline(args, cwd=tmp_path, OMP_NUM_THREADS="2")
    assert first.returncode == 0, first.stderr[-4000:]
    sft_summary = (run_dir / "1_sft" / "summary.json").stat().st_mtime
    # the DPO stage "was interrupted": its dir is gone; the same command redoes only that stage
    import shutil

    shutil.rmtree(run_dir / "2_dpo")
    second = run_pipeline(args, cwd=tmp_path, OMP_NUM_THREADS="2")
    out = second.stdout + second.stderr
    assert second.returncode == 0, second.stderr[-4000:]
    assert "sft already finished" in out and "starting from the full model" in out
    assert (run_dir / "1_sft" / "summary.json").stat().st_mtime == sft_summary
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    assert (run_dir / "2_dpo" / "final" / "model.safetensors").exists()
