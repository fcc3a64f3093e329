"""PNG plots of a run from its <run>/metrics.jsonl: written at the end of training, or on demand by
`python -m pipeline.tools.plot`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.config.run_dir import RunDir
from pipeline.train.observe.monitoring import read_metrics

# Curves of the overview, in reading order: what is optimised, what it earns, what drives it, how fast.
OVERVIEW = ("loss", "reward", "learning_rate", "grad_norm", "completions/mean_length", "perf/samples_per_s")


def series(rows: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """metric -> (steps, values) of training logs; a step logged twice (a resumed run) keeps its last value."""
    by_step: dict[int, dict[str, Any]] = {}
    for row in rows:
        if "loss" in row:
            by_step[row["step"]] = row
    out: dict[str, tuple[list[int], list[float]]] = {}
    for step in sorted(by_step):
        for key, value in by_step[step].items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                steps, values = out.setdefault(key, ([], []))
                steps.append(step)
                values.append(float(value))
    return out


def reward_keys(curves: dict[str, Any]) -> list[str]:
    return [k for k in curves if k.startswith("rewards/") and k.endswith("/mean")]


def plot_run(run_dir: Path) -> list[Path]:
    """Write plots/*.png for every view the run has data for; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    curves = series(read_metrics(run_dir))
    if not curves:
        return []
    out_dir = RunDir(run_dir).plots
    out_dir.mkdir(exist_ok=True)
    views = {
        "loss": ["loss"],
        "reward": ["reward", *reward_keys(curves)],
        "completion_length": ["completions/mean_length", "completions/min_length", "completions/max_length"],
    }
    written = []
    for name, keys in views.items():
        keys = [k for k in keys if k in curves]
        if keys:
            fig, ax = plt.subplots(figsize=(7, 4))
            for key in keys:
                ax.plot(*curves[key], marker=".", label=key)
            _style(ax, name.replace("_", " "), "step")
            written.append(_save(fig, out_dir / f"{name}.png", plt))
    if "loss" in curves and "reward" in curves:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(curves["reward"][1], curves["loss"][1], c=curves["loss"][0], cmap="viridis")
        _style(ax, "loss vs reward (colour: step)", "reward", "loss")
        written.append(_save(fig, out_dir / "loss_vs_reward.png", plt))
    written.append(_overview(curves, out_dir, plt))
    return written


def _overview(curves, out_dir: Path, plt) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, key in zip(axes.flat, OVERVIEW, strict=True):
        if key in curves:
            ax.plot(*curves[key], marker=".")
        _style(ax, key, "step", legend=False)
    fig.suptitle("training progress")
    return _save(fig, out_dir / "overview.png", plt)


def _style(ax, title: str, xlabel: str, ylabel: str = "", legend: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
