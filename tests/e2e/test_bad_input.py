"""Bad input through pipeline/run.py: over-length rows reach the summary, a NaN loss stops before the optimizer step, an
unknown option fails at compose, an unreachable hub model names the path and the fix."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.runs import TINY, run_pipeline


def data_file(tmp: Path, lines: list, name: str = "d.jsonl") -> Path:
    path = tmp / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_over_length_rows_reach_the_summary(tmp_path: Path, model_cache: Path) -> None:
    rows = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(6)]
    rows += [{"prompt": "Repeat: " + "blah " * 80, "completion": "blah"}] * 2
    path = data_file(tmp_path, rows)
    run_dir = tmp_path / "run"
    proc = run_pipeline([*TINY, "stage=sft", "stage.batch_size=2", "stage.max_length=48", "max_steps=1",
                         "data=jsonl", f"data.path={path}", f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows_over_max_length"] == 2
    assert "2 of 8 training rows are longer than stage.max_length=48" in (run_dir / "run.log").read_text()


def test_nan_loss_stops_before_the_optimizer_step(tmp_path: Path) -> None:
    # Weights of 1e30 overflow attention on the first forward: a real NaN loss, no mock. Its own model cache:
    # the session cache must hold only the standard tiny model (other tests look it up by name).
    run_dir = tmp_path / "run"
    proc = run_pipeline([*TINY, "stage=sft", "stage.batch_size=8", "+model.arch.initializer_range=1e30",
                         "stage.save_steps=1", f"output_dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"],
                        cwd=tmp_path)
    assert proc.returncode != 0
    assert "step 1: the loss is NaN/inf" in proc.stderr and "stopped before the optimizer step" in proc.stderr
    assert "lower stage.learning_rate" in proc.stderr
    # Nothing that looks finished: no model, no summary, no checkpoint.
    assert not (run_dir / "final").exists() and not (run_dir / "summary.json").exists()
    assert not list((run_dir / "checkpoints").glob("checkpoint-*"))


def test_unknown_option_fails_at_compose(tmp_path: Path) -> None:
    proc = run_pipeline(["stage=bogus", f"output_dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode != 0 and "bogus" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_unreachable_hub_model_names_the_path_and_the_fix(tmp_path: Path, model_cache: Path) -> None:
    proc = run_pipeline([*TINY, "stage=sft", "model.source=pretrained", "model.path=nobody/no-such-model",
                         f"output_dir={tmp_path / 'run'}", f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "cannot load model.path=nobody/no-such-model" in proc.stderr and "HF_HUB_OFFLINE=1" in proc.stderr
