"""PNG plots of a run from its <run>/metrics.jsonl, and the final/best figures in summary.json.

    python -m pipeline.tools.plot outputs/grpo/20260101_120000      # plots/*.png, summary.json updated

Runs by itself at the end of training; on demand it also works on a run that is still going or was killed
(it then marks summary.json "finished": false, because there is no final/ model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.config.run_dir import RunDir, write_json_atomic
from pipeline.config.user_errors import reported
from pipeline.train.observe.monitoring import best_metrics, final_metrics, read_metrics
from pipeline.train.observe.plots import plot_run


def update_summary(run_dir: Path) -> dict[str, Any]:
    """Merge final and best figures from metrics.jsonl into summary.json (created if the run never finished)."""
    layout = RunDir(run_dir)
    path = layout.summary
    summary = json.loads(path.read_text()) if path.is_file() else {}
    rows = read_metrics(run_dir)
    summary["metrics"] = final_metrics(rows)
    summary["best"] = best_metrics(rows)
    summary["finished"] = layout.final.is_dir()
    write_json_atomic(path, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (holds metrics.jsonl)")
    run_dir = parser.parse_args(argv).run_dir
    if not RunDir(run_dir).metrics.is_file():
        parser.error(f"{run_dir}/metrics.jsonl not found: give a run directory (outputs/<stage>/<run_id>).")
    for path in plot_run(run_dir):
        print(path)
    update_summary(run_dir)
    print(RunDir(run_dir).summary)


if __name__ == "__main__":
    with reported():  # a user error: one block on stderr, exit 2
        main()
