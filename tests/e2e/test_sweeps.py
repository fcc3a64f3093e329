"""Sweeps through Hydra's plugins: a 3-trial Optuna study (hparams_search=grpo_optuna) on the tiny model, and a sweep
whose jobs submitit starts as separate jobs (hydra/launcher=submitit_local, the local twin of submitit_slurm), each
through its hw profile's launcher with 2 gloo ranks. Assertions read the multirun dir."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.distributed import RUN, STAGE_ARGS, TWO_RANKS, launch
from tests.helpers.runs import TINY, run_pipeline

# The GRPO study's own search space, moved where 2 steps of a random model show a difference, and a group size that
# does not divide the batch of 8 (3) so a trial is refused; the objective is the final training reward (no
# evaluation during 2 steps). The sampler's seed (42, in the option file) makes the proposals the same every time.
STUDY = ["hparams_search=grpo_optuna", "hydra.sweeper.n_trials=3", "stage.learning_rate=tag(log, interval(1e-3, 1e-1))",
         "stage.num_generations=choice(3, 4)", "sweep.objective=reward", *TINY, "stage.batch_size=8",
         "stage.max_completion_length=8", "reward=shaped"]


def test_optuna_study_ranks_three_trials_and_survives_a_refused_one(tmp_path: Path, model_cache: Path) -> None:
    proc = run_pipeline([*STUDY, f"paths.output_root={tmp_path}", f"paths.cache_dir={model_cache}"], cwd=tmp_path,
                        RUN_ID="study")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    sweep = tmp_path / "multirun" / "study"
    rows = json.loads((sweep / "sweep_summary.json").read_text())
    assert len(rows) == 3
    statuses = [r["status"] for r in rows]
    # the refused trial is recorded (its reason names the rule) and Optuna marks it failed; the study goes on
    refused = [r for r in rows if r["status"] == "refused"]
    assert refused and all("stage.num_generations=3" in r["swept"] for r in refused), statuses
    assert all("num_generations" in r["reason"] for r in refused)
    assert "Failed experiment: job" in proc.stdout + proc.stderr
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) >= 2, statuses
    for row in done:
        # each job ran under its own run id, and reported the number its summary.json holds
        assert row["run_id"] == f"study_{row['job']}"
        assert row["objective"] == pytest.approx(row["metrics"]["reward"]) and row["objective_mode"] == "max"
    # the best trial: ours (best_trial.json, the table's last line) and Optuna's own agree
    best = json.loads((sweep / "best_trial.json").read_text())
    assert best["objective"] == max(r["objective"] for r in done)
    optuna = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert optuna["best_value"] == pytest.approx(best["objective"])
    assert {f"{k}={v}" for k, v in optuna["best_params"].items()} <= set(best["overrides"])
    assert f"best: job {best['job']} " in (sweep / "sweep_summary.md").read_text()


@pytest.mark.slow  # two jobs at once, each 2 ranks, on 2 cores: ~75 s
def test_submitit_sweep_runs_each_job_through_its_profile_s_launcher(tmp_path: Path, model_cache: Path) -> None:
    command = [sys.executable, RUN, "-m", "hydra/launcher=submitit_local", "stage.learning_rate=1e-4,1e-3",
               *STAGE_ARGS["sft"], *TINY, *TWO_RANKS, "sweep.objective=train_loss", f"paths.output_root={tmp_path}",
               f"paths.cache_dir={model_cache}"]
    proc = launch(command, tmp_path, "cluster")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    sweep = tmp_path / "multirun" / "cluster"
    rows = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(r["swept"], r["status"], r["world_size"], r["engine"], r["run_id"]) for r in rows] == [
        (["stage.learning_rate=0.0001"], "done", 2, "ddp", "cluster_0"),
        (["stage.learning_rate=0.001"], "done", 2, "ddp", "cluster_1")]
    # submitit ran each job in a process of its own (its log per job), which re-launched 2 ranks
    logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2
    for log in logs:
        text = log.read_text()
        assert "re-launching 2 processes: accelerate launch" in text and "rank 1/2 finished 2 optimizer steps" in text
    best = json.loads((sweep / "best_trial.json").read_text())
    assert best["objective"] == min(r["objective"] for r in rows) and best["objective_name"] == "train_loss"
