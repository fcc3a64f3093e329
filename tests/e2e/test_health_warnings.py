"""Health warnings of a real tiny DPO run through pipeline/run.py (thresholds set so two must fire): a loss sign SFT
shares and a preference sign, each printed once with its health/* scalar in TensorBoard; the RL signs are not
DPO's and leave no scalar."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.runs import TINY, run_pipeline, scalars


def test_a_dpo_run_warns_of_a_flat_loss_and_chance_accuracy(tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        [*TINY, "stage=dpo", "stage.batch_size=4", "logging.health.loss_window=1", "logging.health.loss_min_drop=0.99",
         "logging.health.chance_steps=1", "logging.health.chance_band=0.5", f"output_dir={run_dir}",
         f"paths.cache_dir={model_cache}"], cwd=tmp_path, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("training health: accuracy at chance: rewards/accuracies=") == 1, out[-3000:]
    # the loss of step 2 is not 99% below step 1's: flat from the second step on (two windows of one step)
    assert out.count("training health: loss flat: loss (mean of the last 1 logged steps)=") == 1, out[-3000:]
    assert "Usual fix: the policy does not tell chosen from rejected" in out
    tb = scalars(run_dir)
    assert tb["train/health/accuracy_at_chance"] == [1.0, 1.0] and tb["train/health/loss_flat"] == [0.0, 1.0]
    assert tb["train/health/chosen_falling"] == [0.0, 0.0]
    assert not [tag for tag in tb if tag.endswith("health/entropy_collapse")]
