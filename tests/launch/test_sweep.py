"""A sweep job's life without running one: its run id, its objective, what a refused or failed trial of an
optimising sweep becomes, and the summary's objective column and best trial (no stage runs)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from pipeline.config.checks import ConfigError
from pipeline.config.objective import ObjectiveError
from pipeline.config.plan import plan_run
from pipeline.launch import sweep as sweep_module
from pipeline.launch.sweep import (
    FAILED,
    TrialFailed,
    best_trial,
    check_objective,
    collect,
    markdown,
    name_job,
    refused_in_sweep,
    run_job,
)
from tests.helpers.runs import compose_config

OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
GRID = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def hydra_cfg(target: str, mode: RunMode = RunMode.MULTIRUN, direction: str | None = "maximize") -> SimpleNamespace:
    sweeper = {"_target_": target} | ({"direction": direction} if direction else {})
    return SimpleNamespace(mode=mode, sweeper=sweeper, job=SimpleNamespace(num=3))


@pytest.fixture
def as_job(monkeypatch: pytest.MonkeyPatch):
    """Make this process a job of a sweep (HydraConfig.get() as a job sees it)."""
    def set_to(cfg: SimpleNamespace) -> None:
        monkeypatch.setattr(sweep_module.HydraConfig, "get", staticmethod(lambda: cfg))
    return set_to


def plan(tmp_path: Path, *overrides: str):
    return plan_run(compose_config(["model=tiny", "eval.every_steps=1", *overrides]), tmp_path / "job")


def finished(plan_, summary: dict) -> None:
    plan_.run_dir.mkdir(parents=True, exist_ok=True)
    (plan_.run_dir / "summary.json").write_text(json.dumps(summary))


def test_each_job_gets_its_own_run_id() -> None:
    cfg = OmegaConf.create({"run_id": "sweep1"})
    name_job(cfg, hydra_cfg(GRID))
    assert cfg.run_id == "sweep1_3"
    single = OmegaConf.create({"run_id": "run1"})
    name_job(single, hydra_cfg(GRID, mode=RunMode.RUN))
    assert single.run_id == "run1"


def test_a_job_returns_its_objective_only_in_a_sweep(tmp_path: Path, as_job) -> None:
    job = plan(tmp_path)
    best = {"best_checkpoint": {"step": 1, "metric": "eval/accuracy", "value": 0.75}}
    as_job(hydra_cfg(OPTUNA))
    assert run_job(job, lambda: finished(job, best)) == 0.75
    as_job(hydra_cfg(OPTUNA, mode=RunMode.RUN))
    assert run_job(job, lambda: None) is None


def test_optimising_sweep_refuses_an_objective_no_run_will_have(tmp_path: Path, as_job) -> None:
    as_job(hydra_cfg(OPTUNA))
    ran = []
    with pytest.raises(ObjectiveError, match=r"eval.every_steps=0. Fix: eval.every_steps=N"):
        run_job(plan(tmp_path, "eval.every_steps=0"), lambda: ran.append(1))
    assert not ran, "the job trained before its objective was checked"
    # a number every run has needs no evaluation
    check_objective(plan(tmp_path, "eval.every_steps=0", "sweep.objective=train_loss").cfg,
                    {"direction": "minimize"})


def test_optimising_sweep_refuses_a_direction_against_the_objective(tmp_path: Path) -> None:
    with pytest.raises(ObjectiveError, match=r"hydra.sweeper.direction=minimize, but .* better higher"):
        check_objective(plan(tmp_path).cfg, {"direction": "minimize"})
    check_objective(plan(tmp_path, "sweep.mode=min").cfg, {"direction": "minimize"})


def test_a_failed_trial_is_recorded_and_raised_as_a_plain_exception(tmp_path: Path, as_job) -> None:
    job = plan(tmp_path)

    def diverges() -> None:
        raise RuntimeError("probability tensor contains inf")

    as_job(hydra_cfg(OPTUNA))
    # not a user error (which would end the whole study): Hydra's launcher records the job failed, Optuna the trial
    with pytest.raises(TrialFailed, match="job 3 failed: RuntimeError: probability tensor contains inf"):
        run_job(job, diverges)
    assert "probability tensor" in (job.run_dir / FAILED).read_text()
    # a re-launch whose ranks failed exits; that is a failed trial too
    with pytest.raises(TrialFailed, match="SystemExit"):
        run_job(job, lambda: (_ for _ in ()).throw(SystemExit(1)))
    # the grid sweeper keeps the error as it was
    as_job(hydra_cfg(GRID, direction=None))
    with pytest.raises(RuntimeError):
        run_job(job, diverges)


def test_a_diverged_trial_fails_it_and_a_missing_key_ends_the_study(tmp_path: Path, as_job) -> None:
    as_job(hydra_cfg(OPTUNA, direction="minimize"))
    job = plan(tmp_path, "sweep.objective=train_loss")
    with pytest.raises(TrialFailed, match="NaN or inf"):
        run_job(job, lambda: finished(job, {"metrics": {"train_loss": None}}))
    with pytest.raises(ObjectiveError, match="sweep.objective=train_loss: not a number"):
        run_job(job, lambda: finished(job, {"metrics": {"loss": 1.0}}))
    # the grid sweeper does not need an objective: the job still succeeds
    as_job(hydra_cfg(GRID, direction=None))
    assert run_job(job, lambda: finished(job, {"metrics": {"loss": 1.0}})) is None


def test_a_refused_trial_is_recorded_then_failed_for_optuna(tmp_path: Path, as_job) -> None:
    err = ConfigError("invalid config:\n  - stage.num_generations=3 does not divide the batch")
    as_job(hydra_cfg(GRID, direction=None))
    assert refused_in_sweep(err, tmp_path / "0")
    as_job(hydra_cfg(OPTUNA))
    with pytest.raises(TrialFailed, match="job 1 refused: invalid config"):
        refused_in_sweep(err, tmp_path / "1")
    assert "num_generations=3" in (tmp_path / "1" / "refused.txt").read_text()


def _job(sweep_dir: Path, num: int, overrides: list[str], summary: dict | None = None, failed: str = "") -> None:
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    if failed:
        (job / FAILED).write_text(failed)


def test_summary_has_the_objective_column_and_names_the_best_trial(tmp_path: Path) -> None:
    for num, (lr, loss) in enumerate([("1e-4", 0.9), ("1e-3", 0.4), ("1e-2", 0.6)]):
        _job(tmp_path, num, [f"stage.learning_rate={lr}", "model=tiny"], {"steps": 2, "metrics": {"train_loss": loss}})
    _job(tmp_path, 3, ["stage.learning_rate=1", "model=tiny"], failed="RuntimeError: loss is NaN")
    cfg = compose_config(["sweep.objective=train_loss"])
    rows = collect(tmp_path, cfg.sweep, cfg.checkpoint)
    assert [r.get("objective") for r in rows] == [0.9, 0.4, 0.6, None]
    assert rows[3]["status"] == "failed" and rows[3]["reason"] == "RuntimeError: loss is NaN"
    best = best_trial(rows)
    assert (best["job"], best["objective"], best["objective_mode"]) == (1, 0.4, "min")
    table = markdown(rows, best)
    assert table.startswith("| job | swept | status | objective | loss |")
    assert "best: job 1 (stage.learning_rate=1e-3), train_loss=0.4 (min)" in table
    # higher is better for a reward: the other end
    cfg = compose_config(["sweep.objective=train_loss", "sweep.mode=max"])
    assert best_trial(collect(tmp_path, cfg.sweep, cfg.checkpoint))["job"] == 0


def test_a_fresh_job_process_reads_the_study_s_direction(tmp_path: Path) -> None:
    """A job submitit starts unpickles Hydra's singletons but not OmegaConf's resolvers: the check registers it."""
    from hydra import compose, initialize_config_dir

    from pipeline.config.schema import register_configs
    from tests.helpers.runs import CONF

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hparams_search=grpo_optuna"], return_hydra_config=True)
    job = plan(tmp_path)  # composing registers it again: clear it after
    OmegaConf.clear_resolver("sweep_direction")
    check_objective(job.cfg, cfg.hydra.sweeper)
    assert cfg.hydra.sweeper.direction == "maximize"


def test_a_dry_run_of_a_study_reports_one_trial_and_stops(tmp_path: Path, as_job) -> None:
    # otherwise Optuna would count n_trials dry runs as failed trials and end on "no completed trials"
    as_job(hydra_cfg(OPTUNA))
    ran = []
    with pytest.raises(SystemExit) as stop:
        run_job(plan(tmp_path, "dry_run=true"), lambda: ran.append(1))
    assert stop.value.code == 0 and ran == [1]
