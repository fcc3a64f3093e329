"""The `sweep` node: what each job of a sweep reports back to the sweeper (`main`'s return value).

    python pipeline/run.py hparams_search=grpo_optuna                  # Optuna study: conf/hparams_search/
    python pipeline/run.py -m hydra/sweeper=optuna sweep.objective=train_loss 'stage.learning_rate=interval(1e-5,1e-3)'

Reading the value from a finished run is pipeline.config.objective.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.enums import ObjectiveMode
from pipeline.config.frozen import Schema


@dataclass
class SweepConfig(Schema):
    # The number a sweep job returns: null = the value of checkpoint.best_metric at the step <run>/best/ holds
    # (needs eval.every_steps > 0); or a key of the run's summary.json: a top-level number (accuracy_after,
    # seconds_per_step) or a final logged metric under "metrics" (train_loss, reward, eval/loss).
    objective: str | None = None
    # min | max; null = checkpoint.best_mode for the best metric, else min for a name holding "loss", else max.
    # Optuna's direction follows it in conf/hparams_search/ (hydra.sweeper.direction: ${sweep_direction:}).
    mode: ObjectiveMode | None = None
