"""group_pref through pipeline/run.py: training lowers the group loss."""

from __future__ import annotations

import json
import math

from tests.helpers.data import FORMATS
from tests.helpers.runs import run_pipeline, scalars

GROUPS = FORMATS / "scored_groups.jsonl"


def test_training_lowers_the_group_loss(tmp_path, model_cache) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        ["stage=group_pref", "model=tiny", "data=jsonl", f"data.path={GROUPS}", "max_steps=6",
         "stage.batch_size=4", "stage.learning_rate=1e-2", "stage.warmup_ratio=0", "stage.lr_scheduler=constant",
         "stage.max_length=64", "stage.alpha=1.0", f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
        cwd=tmp_path, OMP_NUM_THREADS="1",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    losses = scalars(run_dir)["train/loss"]
    assert len(losses) == 6
    # the same 4 groups every step: at the start pi = pi_ref, so the loss is exactly alpha
    assert math.isclose(losses[0], 1.0, abs_tol=1e-4)
    assert losses[-1] < losses[0] - 0.05
    assert summary["metrics"]["rewards/margin"] > 0 and summary["steps"] == 6
    assert (run_dir / "final" / "adapter_model.safetensors").exists()
