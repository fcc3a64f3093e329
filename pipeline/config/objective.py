"""A sweep job's objective: the number `main` returns to the sweeper, read back from the finished run's summary.json.

    read_objective(run_dir, cfg.sweep, cfg.checkpoint)   # Objective(name="eval/accuracy", value=0.42)
    objective_mode(cfg.sweep, cfg.checkpoint, name)       # "max"
    ${sweep_direction:}                                   # "maximize": Optuna's direction, in conf/hparams_search/

The default objective is checkpoint.best_metric's value at the step <run>/best/ holds (summary.json:
best_checkpoint); `sweep.objective=KEY` names another number of summary.json instead (a top-level one such as
accuracy_after, or a final logged metric such as train_loss). A chain's objective is its last step's. Reading
happens after the run (and after a re-launch's ranks have exited), so it works the same for 1 or N processes.
Light imports only: run.py uses it before torch is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.config.run_dir import RunDir
from pipeline.config.user_errors import UserError


class ObjectiveError(UserError):
    """The objective a sweep optimises is not there: a sweeper cannot rank this job (nor any other like it)."""


class NotFiniteObjective(ValueError):
    """The objective is there but NaN or inf (summary.json writes them as null): this trial diverged, a failed
    trial rather than a mistake in the sweep."""


@dataclass(frozen=True)
class Objective:
    name: str
    value: float


def objective_name(sweep: Any, checkpoint: Any) -> str | None:
    """The named key, or checkpoint.best_metric; None = whichever metric best/ was kept by (the run decides)."""
    return sweep.objective or checkpoint.best_metric


def objective_mode(sweep: Any, checkpoint: Any, name: str | None) -> str:
    """min | max: sweep.mode, else checkpoint.best_mode for the best metric, else from the name (as best/ does)."""
    if sweep.mode is not None:
        return str(getattr(sweep.mode, "value", sweep.mode))
    if sweep.objective is None and checkpoint.best_mode:
        return str(checkpoint.best_mode)
    # best/'s own fallback metric is eval/accuracy when the data has answers (eval callback): higher is better
    return "min" if name and "loss" in name else "max"


def needs_evaluation(sweep: Any, checkpoint: Any) -> bool:
    """True when the objective only exists if the run evaluates during training (eval.every_steps > 0)."""
    return sweep.objective is None or sweep.objective.startswith("eval/")


def read_objective(run_dir: Path, sweep: Any, checkpoint: Any) -> Objective:
    """The objective of a finished run; ObjectiveError naming the key and the fix when it is not there."""
    path = RunDir(run_dir).summary
    if not path.is_file():
        raise ObjectiveError(f"{path} not found: the run did not finish, so it has no objective to report.")
    summary = json.loads(path.read_text())
    if summary.get("stages"):  # a chain: the last step is what the chain produced
        summary = summary["stages"][-1]
    if sweep.objective is None:
        best = summary.get("best_checkpoint") or {}
        if best.get("value") is None:
            metric = checkpoint.best_metric or "eval/accuracy (or eval/loss)"
            raise ObjectiveError(
                f"the sweep's objective is checkpoint.best_metric={metric}, and {run_dir} kept no best/ step. Fix: "
                "eval.every_steps=N (> 0) so the run evaluates during training and keeps best/, or "
                f"sweep.objective=KEY for a number the run has ({', '.join(available(summary))}).")
        return Objective(best["metric"], float(best["value"]))
    value = _lookup(summary, sweep.objective)
    key, sources = sweep.objective, (summary, summary.get("metrics") or {})
    if value is None and any(key in src and src[key] is None for src in sources):
        raise NotFiniteObjective(f"sweep.objective={sweep.objective} is NaN or inf in {path}: the run diverged.")
    if value is None:
        raise ObjectiveError(
            f"sweep.objective={sweep.objective}: not a number in {path}. Fix: one of {', '.join(available(summary))}"
            + (", or eval.every_steps=N so eval/ metrics are logged" if sweep.objective.startswith("eval/") else "")
            + ".")
    return Objective(sweep.objective, value)


def available(summary: dict[str, Any]) -> list[str]:
    """The keys sweep.objective may name in this summary: top-level numbers, then the final logged metrics."""
    top = [k for k, v in summary.items() if _number(v)]
    return top + sorted(k for k, v in (summary.get("metrics") or {}).items() if _number(v) and k not in top)


def _lookup(summary: dict[str, Any], key: str) -> float | None:
    for source in (summary, summary.get("metrics") or {}):
        if _number(source.get(key)):
            return float(source[key])
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---- Optuna's direction from sweep.mode (one setting, not two that can disagree) --------------------------------


def direction(sweep: Any, checkpoint: Any) -> str:
    return {"min": "minimize", "max": "maximize"}[objective_mode(sweep, checkpoint, objective_name(sweep, checkpoint))]


def register_direction() -> None:
    # `hydra.sweeper.direction: ${sweep_direction:}` resolves against the whole config (the sweep and checkpoint
    # nodes); replace=True: tests and sweeps call register_configs() more than once per process
    OmegaConf.register_new_resolver(
        "sweep_direction", lambda *, _root_: direction(_root_.sweep, _root_.checkpoint), replace=True)
