"""Reading a sweep job's objective back from its summary.json: the best metric by default, a named key otherwise,
and an error naming the key and the fix when the number is not there."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.config.objective import (
    NotFiniteObjective,
    Objective,
    ObjectiveError,
    direction,
    objective_mode,
    read_objective,
)
from pipeline.config.user_errors import block, is_user_error

SUMMARY = {"stage": "grpo", "steps": 4, "accuracy_after": 0.25, "seconds_per_step": 1.5,
           "metrics": {"train_loss": 0.7, "reward": 0.4, "eval/accuracy": 0.3},
           "best_checkpoint": {"step": 2, "metric": "eval/accuracy", "value": 0.5}}


def sweep(objective: str | None = None, mode: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(objective=objective, mode=mode)


def checkpoint(best_metric: str | None = None, best_mode: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(best_metric=best_metric, best_mode=best_mode)


def run(tmp_path: Path, summary: dict) -> Path:
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_default_is_the_best_metric_s_value_at_best(tmp_path: Path) -> None:
    # not the final eval/accuracy (0.3): the step best/ holds
    assert read_objective(run(tmp_path, SUMMARY), sweep(), checkpoint()) == Objective("eval/accuracy", 0.5)


def test_a_named_key_is_a_top_level_number_or_a_final_metric(tmp_path: Path) -> None:
    path = run(tmp_path, SUMMARY)
    assert read_objective(path, sweep("accuracy_after"), checkpoint()) == Objective("accuracy_after", 0.25)
    assert read_objective(path, sweep("train_loss"), checkpoint()) == Objective("train_loss", 0.7)


def test_a_chain_reports_its_last_step(tmp_path: Path) -> None:
    chain = {"stage": "sft_then_grpo", "stages": [{"metrics": {"train_loss": 2.0}}, SUMMARY]}
    assert read_objective(run(tmp_path, chain), sweep("train_loss"), checkpoint()).value == 0.7


def test_no_best_step_names_the_metric_and_the_fix(tmp_path: Path) -> None:
    no_eval = {k: v for k, v in SUMMARY.items() if k != "best_checkpoint"} | {"best_checkpoint": None}
    with pytest.raises(ObjectiveError) as err:
        read_objective(run(tmp_path, no_eval), sweep(), checkpoint("eval/pass@4"))
    text = block(err.value)
    assert "checkpoint.best_metric=eval/pass@4" in text and "Fix: eval.every_steps=N" in text
    # the keys the user could name instead
    assert "sweep.objective=KEY" in text and "accuracy_after" in text and "train_loss" in text
    assert is_user_error(err.value)


def test_an_unknown_key_is_named_with_what_exists(tmp_path: Path) -> None:
    with pytest.raises(ObjectiveError, match=r"sweep.objective=eval/los: not a number in .*summary.json. Fix: one "
                                             r"of ") as err:
        read_objective(run(tmp_path, SUMMARY), sweep("eval/los"), checkpoint())
    assert all(key in str(err.value) for key in ("accuracy_after", "train_loss", "eval/accuracy", "reward"))
    with pytest.raises(ObjectiveError, match="not a number"):  # a string is not an objective
        read_objective(run(tmp_path, SUMMARY), sweep("stage"), checkpoint())


def test_an_unfinished_run_has_no_objective(tmp_path: Path) -> None:
    with pytest.raises(ObjectiveError, match="summary.json not found: the run did not finish"):
        read_objective(tmp_path, sweep(), checkpoint())


def test_a_diverged_run_is_not_finite_not_a_user_mistake(tmp_path: Path) -> None:
    # summary.json writes NaN as null: the key is there, its value is not a number
    diverged = SUMMARY | {"metrics": {"train_loss": None}}
    with pytest.raises(NotFiniteObjective, match="train_loss is NaN or inf") as err:
        read_objective(run(tmp_path, diverged), sweep("train_loss"), checkpoint())
    assert not is_user_error(err.value)


@pytest.mark.parametrize(("given", "best", "name", "mode"), [
    (sweep(mode="min"), checkpoint(), "eval/accuracy", "min"),  # sweep.mode wins
    (sweep(), checkpoint(best_mode="min"), "eval/accuracy", "min"),  # the best metric's own mode
    (sweep("reward"), checkpoint(best_mode="min"), "reward", "max"),  # best_mode is not the named key's
    (sweep("train_loss"), checkpoint(), "train_loss", "min"),
    (sweep(), checkpoint(), None, "max"),  # best/'s fallback: eval/accuracy
    (sweep(), checkpoint("eval/loss"), "eval/loss", "min"),
])
def test_mode_follows_the_setting_then_the_name(given, best, name, mode) -> None:
    assert objective_mode(given, best, name) == mode


def test_optuna_direction_from_the_same_rule() -> None:
    assert direction(sweep(), checkpoint("eval/loss")) == "minimize"
    assert direction(sweep(), checkpoint("eval/accuracy")) == "maximize"
