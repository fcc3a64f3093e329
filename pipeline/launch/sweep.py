"""Hydra multirun sweeps: each job's run id and objective, a refused job recorded instead of ending the sweep, and a
summary of every job.

    python pipeline/run.py -m peft=lora,full quant=none,nf4 model=tiny max_steps=2
    python pipeline/run.py hparams_search=grpo_optuna          # an Optuna study (conf/hparams_search/)

Each job runs in <sweep dir>/<job number>/ (through the hw profile's launcher when it wants several processes) with
its own run id, <sweep run id>_<job number>. A job returns its objective (pipeline.config.objective) to the sweeper.
Under an optimising sweeper (Optuna) a refused or failed job raises TrialFailed, which Hydra records as a failed
job and Optuna as a failed trial: the study goes on while hydra.sweeper.max_failure_rate allows. When the sweep
ends, `SweepSummary` writes <sweep dir>/sweep_summary.json and .md (one row per job: overrides, status, objective,
final metrics) and best_trial.json. Light imports only: Hydra instantiates this in every run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.config.objective import (
    NotFiniteObjective,
    ObjectiveError,
    direction,
    needs_evaluation,
    objective_mode,
    objective_name,
    read_objective,
    register_direction,
)
from pipeline.config.run_dir import RunDir

log = logging.getLogger(__name__)
REFUSED = "refused.txt"
FAILED = "failed.txt"
BEST = "best_trial.json"
# Metrics shown in the Markdown table (all of them are in the JSON); the first match per column wins.
COLUMNS = {
    "objective": ("objective",),
    "loss": ("train_loss", "loss"),
    "reward": ("reward",),
    "acc before": ("accuracy_before",),
    "acc after": ("accuracy_after",),
    "steps": ("steps",),
    "s/step": ("seconds_per_step",),
}


class TrialFailed(Exception):
    """A job of an optimising sweep that was refused or failed: a plain exception, so Hydra's launcher records the
    job as failed (our user errors end the whole command instead) and Optuna's sweeper marks the trial FAIL."""


def in_sweep() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def optimising(hydra_cfg: Any) -> bool:
    """A sweeper that reads the jobs' return values (Optuna, Nevergrad, Ax), not Hydra's grid sweeper."""
    return hydra_cfg.mode == RunMode.MULTIRUN and "BasicSweeper" not in str(hydra_cfg.sweeper.get("_target_", ""))


def name_job(cfg: DictConfig, hydra_cfg: Any) -> None:
    """Each job of a sweep its own run id (TRL's run name, summary.json, the RUN_ID its ranks share); the sweep dir
    keeps the sweep's own."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        cfg.run_id = f"{cfg.run_id}_{hydra_cfg.job.num}"


def refused_in_sweep(err: Exception, run_dir: Path) -> bool:
    """In a multirun, write the validation message into the job's dir and let the sweep go on."""
    if not in_sweep():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REFUSED).write_text(str(err) + "\n")
    log.error("job %s refused:\n%s", run_dir.name, err)
    if optimising(HydraConfig.get()):
        raise TrialFailed(f"job {run_dir.name} refused: {err}") from err
    return True


def check_objective(cfg: Any, sweeper: Any) -> None:
    """Before an optimising sweep's job trains: its objective will exist, and the sweeper ranks it the right way."""
    if needs_evaluation(cfg.sweep, cfg.checkpoint) and cfg.eval.every_steps <= 0:
        name = objective_name(cfg.sweep, cfg.checkpoint) or "checkpoint.best_metric"
        raise ObjectiveError(
            f"the sweep optimises {name}, which only a run that evaluates during training has, and "
            "eval.every_steps=0. Fix: eval.every_steps=N (> 0), or sweep.objective=KEY for a number every run "
            "has (train_loss, reward, accuracy_after).")
    # a job submitit starts is a fresh process: Hydra restores its own singletons there, not OmegaConf's resolvers
    register_direction()
    wanted, told = direction(cfg.sweep, cfg.checkpoint), sweeper.get("direction")
    told = getattr(told, "name", told)
    if isinstance(told, str) and told != wanted:
        raise ObjectiveError(
            f"hydra.sweeper.direction={told}, but the objective {objective_name(cfg.sweep, cfg.checkpoint)} is "
            f"better {'lower' if wanted == 'minimize' else 'higher'} (sweep.mode). Fix: "
            "hydra.sweeper.direction='${sweep_direction:}' (as conf/hparams_search/ has), or set sweep.mode.")


def run_job(plan: Any, body: Callable[[], None]) -> float | None:
    """Run the job (`body`); in a sweep, return its objective. Outside a sweep (or in a dry run): None."""
    hydra_cfg, cfg = HydraConfig.get(), plan.cfg
    if optimising(hydra_cfg) and cfg.dry_run:  # a dry run has no objective: one trial's report, then stop
        body()
        print("dry_run=true in a study: the first trial's plan is above; no trial trains.", flush=True)
        raise SystemExit(0)
    optimiser = optimising(hydra_cfg)
    if optimiser:
        check_objective(cfg, hydra_cfg.sweeper)
    try:
        body()
    except (Exception, SystemExit) as err:  # SystemExit: a re-launch whose ranks failed
        if not optimiser:
            raise
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        (plan.run_dir / FAILED).write_text(f"{type(err).__name__}: {err}\n")
        raise TrialFailed(f"job {hydra_cfg.job.num} failed: {type(err).__name__}: {err}") from err
    if hydra_cfg.mode != RunMode.MULTIRUN or cfg.dry_run:
        return None
    try:
        found = read_objective(plan.run_dir, cfg.sweep, cfg.checkpoint)
    except (ObjectiveError, NotFiniteObjective) as err:
        if optimiser and isinstance(err, NotFiniteObjective):  # this trial diverged: a failed trial
            raise TrialFailed(str(err)) from err
        if optimiser:  # a missing key is missing in every trial: the study ends, with the fix
            raise
        log.info("no objective for this job (the grid sweeper does not need one): %s", err)
        return None
    log.info("objective %s=%.6g (job %s)", found.name, found.value, hydra_cfg.job.num)
    return found.value


def collect(sweep_dir: Path, sweep: Any = None, checkpoint: Any = None) -> list[dict[str, Any]]:
    """One row per job dir: overrides, status (done | refused | failed), objective and summary.json's values
    (`sweep`, `checkpoint`: the sweep's config nodes that name the objective; None = no objective column)."""
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        row: dict[str, Any] = {"job": int(job.name), "dir": str(job), "overrides": overrides}
        if RunDir(job).summary.exists():
            summary = json.loads(RunDir(job).summary.read_text())
            row.update(status="done", **{k: v for k, v in summary.items() if k != "metrics"})
            row["metrics"] = summary.get("metrics", {})
            row.update(_objective(job, sweep, checkpoint))
        elif (job / REFUSED).exists():
            row.update(status="refused", reason=(job / REFUSED).read_text().strip())
        else:
            row["status"] = "failed"
            if (job / FAILED).exists():
                row["reason"] = (job / FAILED).read_text().strip()
        rows.append(row)
    # the overrides that differ between jobs: what the sweep varied (the rest is common to all of them)
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    for row in rows:
        row["swept"] = [o for o in row["overrides"] if o not in common]
    return rows


def _objective(job: Path, sweep: Any, checkpoint: Any) -> dict[str, Any]:
    if sweep is None:
        return {}
    try:
        found = read_objective(job, sweep, checkpoint)
    except (ObjectiveError, NotFiniteObjective):
        return {"objective": None}
    return {"objective": found.value, "objective_name": found.name,
            "objective_mode": objective_mode(sweep, checkpoint, found.name)}


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished job with the best objective (lowest for min, highest for max); None when none has one."""
    ranked = [r for r in rows if r.get("objective") is not None]
    if not ranked:
        return None
    pick = min if ranked[0]["objective_mode"] == "min" else max
    best = pick(ranked, key=lambda r: r["objective"])
    return {k: best[k] for k in ("job", "dir", "swept", "overrides", "objective", "objective_name", "objective_mode")}


def markdown(rows: list[dict[str, Any]], best: dict[str, Any] | None = None) -> str:
    head = ["job", "swept", "status", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        values = [str(row["job"]), " ".join(row["swept"]), row["status"]]
        for keys in COLUMNS.values():
            found = next((src[k] for k in keys for src in (row, row.get("metrics", {})) if src.get(k) is not None),
                         None)
            values.append(f"{found:.4g}" if isinstance(found, float) else "" if found is None else str(found))
        lines.append("| " + " | ".join(values) + " |")
    if best is not None:
        lines += ["", f"best: job {best['job']} ({' '.join(best['swept']) or 'the only job'}), "
                      f"{best['objective_name']}={best['objective']:.6g} ({best['objective_mode']}), {best['dir']}"]
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml: hydra.callbacks.sweep_summary) run once after a --multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir, config.sweep, config.checkpoint)
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
        best = best_trial(rows)
        if best is not None:
            (sweep_dir / BEST).write_text(json.dumps(best, indent=2) + "\n")
        table = markdown(rows, best)
        (sweep_dir / "sweep_summary.md").write_text(table)
        log.info("sweep summary (%s):\n%s", sweep_dir / "sweep_summary.md", table)
