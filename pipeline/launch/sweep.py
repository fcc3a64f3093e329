"""Hydra multirun sweeps: a refused job is recorded instead of ending the sweep, and a summary of every job.

    python pipeline/run.py -m peft=lora,full quant=none,nf4 model=tiny max_steps=2

Each job runs in <sweep dir>/<job number>/ (through the hw profile's launcher when it wants several processes).
When the sweep ends, `SweepSummary` writes <sweep dir>/sweep_summary.json and .md: one row per job with its
overrides, status and final metrics side by side. Light imports only: Hydra instantiates this in every run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.config.run_dir import RunDir

log = logging.getLogger(__name__)
REFUSED = "refused.txt"
# Metrics shown in the Markdown table (all of them are in the JSON); the first match per column wins.
COLUMNS = {
    "loss": ("train_loss", "loss"),
    "reward": ("reward",),
    "acc before": ("accuracy_before",),
    "acc after": ("accuracy_after",),
    "steps": ("steps",),
    "s/step": ("seconds_per_step",),
}


def refused_in_sweep(err: Exception, run_dir: Path) -> bool:
    """In a multirun, write the validation message into the job's dir and let the sweep go on."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REFUSED).write_text(str(err) + "\n")
    log.error("job %s refused:\n%s", run_dir.name, err)
    return True


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job dir: overrides, status (done | refused | failed) and summary.json's values."""
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        row: dict[str, Any] = {"job": int(job.name), "dir": str(job), "overrides": overrides}
        if RunDir(job).summary.exists():
            summary = json.loads(RunDir(job).summary.read_text())
            row.update(status="done", **{k: v for k, v in summary.items() if k != "metrics"})
            row["metrics"] = summary.get("metrics", {})
        elif (job / REFUSED).exists():
            row.update(status="refused", reason=(job / REFUSED).read_text().strip())
        else:
            row["status"] = "failed"
        rows.append(row)
    # the overrides that differ between jobs: what the sweep varied (the rest is common to all of them)
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    for row in rows:
        row["swept"] = [o for o in row["overrides"] if o not in common]
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ["job", "swept", "status", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        values = [str(row["job"]), " ".join(row["swept"]), row["status"]]
        for keys in COLUMNS.values():
            found = next((src[k] for k in keys for src in (row, row.get("metrics", {})) if src.get(k) is not None),
                         None)
            values.append(f"{found:.4g}" if isinstance(found, float) else "" if found is None else str(found))
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml: hydra.callbacks.sweep_summary) run once after a --multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir)
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
        table = markdown(rows)
        (sweep_dir / "sweep_summary.md").write_text(table)
        log.info("sweep summary (%s):\n%s", sweep_dir / "sweep_summary.md", table)
