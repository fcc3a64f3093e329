"""What a real tiny GRPO run through pipeline/run.py says about its groups and its health: groups that teach
nothing skipped and counted (groups/* scalars, summary.json), and a health warning (thresholds set so it must
fire) printed once with its health/* scalar in TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.runs import TINY, run_pipeline, scalars


def test_skipped_groups_and_a_health_warning_in_a_tiny_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        [*TINY, "stage=grpo", "stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=4",
         "stage.zero_std_groups=skip", "logging.health.entropy_min=1000", f"output_dir={run_dir}",
         f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("training health: entropy collapse: entropy=") == 1, out[-3000:]
    assert "Usual fix: raise stage.temperature" in out
    tb = scalars(run_dir)
    assert tb["train/health/entropy_collapse"] == [1.0, 1.0] and tb["train/health/kl_blowup"] == [0.0, 0.0]
    groups = json.loads((run_dir / "summary.json").read_text())["groups"]
    # 2 prompts per step: each either trained or skipped, and TensorBoard counts the same per step
    assert groups["trained"] + groups["skipped"] == 4 and groups["skipped"] <= groups["zero_std"]
    assert sum(tb["train/groups/skipped"]) == groups["skipped"]
    assert sum(tb["train/groups/trained"]) == groups["trained"]
    # a step whose groups were all skipped still measures the policy's entropy (not the zero of an empty mask)
    assert all(row["entropy"] > 0 for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if "loss" in row)
