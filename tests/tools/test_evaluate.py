"""evaluate on a finished run: compare=base matches the run's own measurements, an unfinished run and bad options
are refused, MCQ scoring and CSV predictions.

The run is a real 2-step training of the tiny model; the tool runs as the user starts it (python -m ...)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.tools.evaluate import _write_outputs, is_mcq
from tests.helpers.runs import run_tool


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_evaluate_compare_base_matches_the_runs_own_measurements(lora_run: Path) -> None:
    proc = run_tool("evaluate", str(lora_run), "compare=base", cwd=lora_run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "base" in proc.stdout and "tuned" in proc.stdout and "accuracy" in proc.stdout
    report = json.loads((lora_run / "eval" / "eval.json").read_text())
    summary = json.loads((lora_run / "summary.json").read_text())
    assert report["problems"] == 8 and list(report["models"]) == ["base", "tuned"]
    assert report["models"]["tuned"]["accuracy"] == summary["accuracy_after"]
    assert report["models"]["base"]["accuracy"] == summary["accuracy_before"]
    # Reloaded from disk, greedy: the same completions the run itself produced before and after training.
    rows = jsonl(lora_run / "eval" / "predictions.jsonl")
    after, before = jsonl(lora_run / "samples/eval_after.jsonl"), jsonl(lora_run / "samples/eval_before.jsonl")
    assert [r["tuned_completion"] for r in rows] == [r["completion"] for r in after]
    assert [r["base_completion"] for r in rows] == [r["completion"] for r in before]
    assert any(r["tuned_completion"] != r["base_completion"] for r in rows), "the adapter was not applied"


def test_evaluate_refuses_an_unfinished_run_and_bad_options(lora_run: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((lora_run / "config.yaml").read_text())
    proc = run_tool("evaluate", str(tmp_path))
    assert proc.returncode == 2 and "did not finish" in proc.stderr and "resume=auto" in proc.stderr
    proc = run_tool("evaluate", str(lora_run), "limt=3")
    assert proc.returncode == 2 and "unknown option 'limt=3'" in proc.stderr


def test_mcq_scoring_and_csv_predictions(tmp_path: Path) -> None:
    assert is_mcq("mcq", ["1"]) and is_mcq("auto", ["A", "d "]) and not is_mcq("auto", ["A", "12"])
    _write_outputs(tmp_path, {"models": {}}, [{"prompt": "q", "answer": "B", "tuned_completion": "B",
                                               "tuned_correct": True}], mcq=True)
    assert (tmp_path / "predictions.csv").read_text().splitlines() == [
        "prompt,answer,tuned_completion,tuned_correct", "q,B,B,True"
    ]
    assert (tmp_path / "eval.json").exists()


def test_compare_model_is_the_model_option_without_init_from(lora_run: Path, tmp_path: Path) -> None:
    # a step that began from lora_run's adapter (as a chain's GRPO step begins from its SFT step)
    step = tmp_path / "2_grpo"
    step.mkdir()
    config = (lora_run / "config.yaml").read_text()
    assert "\ninit_from: null\n" in config
    (step / "config.yaml").write_text(config.replace("\ninit_from: null\n", f"\ninit_from: {lora_run / 'final'}\n"))
    (step / "final").symlink_to(lora_run / "final")
    proc = run_tool("evaluate", str(step), "compare=model", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = jsonl(step / "eval" / "predictions.jsonl")
    before = jsonl(lora_run / "samples/eval_before.jsonl")
    # model= alone: the untrained model's completions, not those of the adapter the step began from
    assert [r["model_completion"] for r in rows] == [r["completion"] for r in before]
    assert any(r["model_completion"] != r["tuned_completion"] for r in rows)
