"""What a run leaves behind for people: TensorBoard events in <run>/tb and summary.json."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback


def tensorboard_callback(run_dir: Path) -> TrainerCallback:
    """TRL's own TensorBoard logging, pointed at <run>/tb (transformers 5 has no logging_dir argument)."""
    from torch.utils.tensorboard import SummaryWriter

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tb")))


def final_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """Last logged value of every numeric metric (the trainer logs step by step; later entries win)."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if isinstance(value, int | float) and key != "step":
                metrics[key] = float(value)
    return metrics


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file and rename, so a reader never sees half a summary."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(payload), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf; null is honest and parses everywhere.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
