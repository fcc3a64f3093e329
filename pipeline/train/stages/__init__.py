"""Stage runners: the stage table (pipeline/config/stage_table.py) names each stage's runner function."""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.config.plan import RunPlan
from pipeline.train.runtime.distributed import explain_timeouts


def run_stage(plan: RunPlan) -> dict[str, Any]:
    """Run the planned stage in its run dir; returns its summary."""
    module, _, function = plan.stage.runner.partition(":")
    # Imported by name, on demand: each stage pulls in torch, transformers and its TRL trainer.
    runner = getattr(importlib.import_module(module), function)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    with explain_timeouts(plan.cfg.hw.collective_timeout_s):
        return runner(plan)
