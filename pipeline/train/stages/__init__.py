"""Stage runners: one function per training method, picked by `stage.name`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config.schema import RunConfig


def _runner(name: str) -> Callable[[RunConfig, Path], dict[str, Any]]:
    # Imported on demand: each stage pulls in torch, transformers and its TRL trainer.
    if name == "sft":
        from pipeline.train.stages.sft import run_sft as runner
    elif name == "dpo":
        from pipeline.train.stages.dpo import run_dpo as runner
    elif name == "group_pref":
        from pipeline.train.stages.group_pref import run_group_pref as runner
    elif name.startswith("sft_then_"):
        from pipeline.train.stages.chain import run_chain as runner
    else:
        from pipeline.train.stages.grpo import run_grpo as runner
    return runner


def run_stage(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run the configured stage in `run_dir`; returns its summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return _runner(cfg.stage.name)(cfg, run_dir)
