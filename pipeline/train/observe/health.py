"""Training-health warnings (`logging.health.*`): the failure modes axolotl's training-stability guide lists, read
from the metrics TRL logs each step -- for RL runs (GRPO, RLOO: below), for SFT and the preference stages (DPO and
its kin: pipeline/train/observe/health_supervised.py, which every stage without rewards gets).

Each sign gives one warning line -- metric, value, threshold and the usual fix -- the first time it shows (a run
that collapses does not repeat it every step), and a `health/<sign>` scalar on every logged step (1 while the sign
holds, else 0) beside the metrics in TensorBoard and metrics.jsonl, so the step it started is visible.

    entropy_collapse   entropy < entropy_min
    kl_blowup          kl > kl_max                                  (stage.beta > 0)
    clipped_ratio      clip_ratio/region_mean > clip_ratio_max
    truncated          completions/clipped_ratio > truncated_max for truncated_steps logged steps in a row
    reward_hacking     eval/accuracy below its best by accuracy_drop while the reward is above its value then
    constant_reward    rewards/<term>/std == 0 for constant_term_steps logged steps in a row
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

from pipeline.config.logging_schema import HealthConfig
from pipeline.config.stage_table import RowShape, Stage
from pipeline.train.observe.health_supervised import PREFERENCE_FIXES, SFT_FIXES, PreferenceSigns, SupervisedSigns

log = logging.getLogger(__name__)

RL_FIXES = {
    "entropy_collapse": "raise stage.temperature, widen the upper clip (stage.epsilon_high=0.28, DAPO's clip-higher) "
                        "or lower stage.learning_rate",
    "kl_blowup": "lower stage.learning_rate or raise stage.beta (a tighter pull to the reference)",
    "clipped_ratio": "lower stage.learning_rate, or fewer stage.num_iterations per generated batch",
    "truncated": "raise stage.max_completion_length, or stage.mask_truncated_completions=true (DAPO's overlong "
                 "filtering) / a length penalty term",
    "reward_hacking": "read the completions (samples/completions.jsonl): the reward likely has a loophole; tighten "
                      "the term (e.g. reward=correctness_format), lower stage.learning_rate, or keep best/",
    "constant_reward": "check the term's function and kwargs (and that its data column exists): a constant score "
                       "gives no signal; fix or remove it (reward.terms.<name>)",
}
FIXES = {**RL_FIXES, **SFT_FIXES, **PREFERENCE_FIXES}
# the signs a family of stages is watched for: RL with rewards, preference pairs (plus the loss signs), the rest
FAMILIES = {"rl": tuple(RL_FIXES), "preference": (*SFT_FIXES, *PREFERENCE_FIXES), "supervised": tuple(SFT_FIXES)}


def health_family(stage: Stage) -> str:
    """Which signs a stage is watched for, from its table entry (rewards; preference rows of a policy)."""
    if stage.rewards:
        return "rl"
    return "preference" if stage.rows == RowShape.preference and stage.policy else "supervised"


@dataclass
class Sign:
    name: str
    metric: str
    value: float
    threshold: float

    def line(self) -> str:
        return (f"training health: {self.name.replace('_', ' ')}: {self.metric}={self.value:.4g} (threshold "
                f"{self.threshold:.4g}). Usual fix: {FIXES[self.name]}.")


@dataclass
class HealthMonitor:
    """What the logged metrics say, step by step; `check(logs)` returns the signs that hold in this log."""

    cfg: HealthConfig
    family: str = "rl"
    said: set[str] = field(default_factory=set)
    # logged steps in a row each streak sign has held (rewards/<term>/std == 0, truncation); the best
    # eval/accuracy and the training reward at that evaluation
    streaks: dict[str, int] = field(default_factory=dict)
    best_accuracy: float | None = None
    reward_at_best: float | None = None
    last_reward: float | None = None

    def __post_init__(self) -> None:
        self.supervised = SupervisedSigns(self.cfg)
        self.preference = PreferenceSigns(self.cfg)

    def check(self, logs: dict[str, Any]) -> list[Sign]:
        if self.family != "rl":
            found = self.supervised.check(logs)
            if self.family == "preference" and not _is_eval(logs):
                found += self.preference.check(logs)
            return [Sign(*sign) for sign in found]
        c, signs = self.cfg, []
        signs += _below(logs, "entropy", c.entropy_min, "entropy_collapse")
        signs += _above(logs, "kl", c.kl_max, "kl_blowup")
        signs += _above(logs, "clip_ratio/region_mean", c.clip_ratio_max, "clipped_ratio")
        truncated = _above(logs, "completions/clipped_ratio", c.truncated_max, "truncated")
        signs += self._persisting(truncated, "completions/clipped_ratio", logs, c.truncated_steps)
        signs += self._constant_terms(logs)
        signs += self._reward_hacking(logs)
        return signs

    def _persisting(self, held: list[Sign], key: str, logs: dict[str, Any], steps: int) -> list[Sign]:
        """`held` (this log's sign on `key`, or none) once it has held `steps` logged steps in a row."""
        if not _number(logs.get(key)):
            return []
        self.streaks[key] = self.streaks.get(key, 0) + 1 if held else 0
        return held if self.streaks[key] >= steps else []

    def _constant_terms(self, logs: dict[str, Any]) -> list[Sign]:
        signs = []
        for key, value in logs.items():
            if key.startswith("rewards/") and key.endswith("/std") and _number(value):
                flat = [Sign("constant_reward", key, float(value), 0.0)] if value == 0 else []
                signs += self._persisting(flat, key, logs, self.cfg.constant_term_steps)
        return signs

    def _reward_hacking(self, logs: dict[str, Any]) -> list[Sign]:
        if _number(logs.get("reward")):
            self.last_reward = float(logs["reward"])
        accuracy = logs.get("eval_accuracy", logs.get("eval/accuracy"))
        if not _number(accuracy):
            return []
        if self.best_accuracy is None or accuracy > self.best_accuracy:
            self.best_accuracy, self.reward_at_best = float(accuracy), self.last_reward
            return []
        fell = accuracy < self.best_accuracy - self.cfg.accuracy_drop
        rose = None not in (self.last_reward, self.reward_at_best) and self.last_reward > self.reward_at_best
        if fell and rose:
            floor = self.best_accuracy - self.cfg.accuracy_drop
            return [Sign("reward_hacking", "eval/accuracy", float(accuracy), floor)]
        return []

    def scalars(self, signs: list[Sign], logs: dict[str, Any]) -> dict[str, float]:
        """health/<sign> for the signs this log can show (1 holds, 0 not); evaluation logs only the eval sign."""
        held, family = {s.name for s in signs}, FAMILIES[self.family]
        # each evaluation-time sign on evaluation logs only, the others on training logs only
        at_eval = {"reward_hacking", "overfitting"}
        names = [n for n in family if (n in at_eval) == _is_eval(logs)]
        return {f"health/{name}": float(name in held) for name in names}

    def new(self, signs: list[Sign]) -> list[Sign]:
        """The signs not warned about yet (one line each per run)."""
        fresh = [s for s in signs if (s.name, s.metric) not in self.said]
        self.said |= {(s.name, s.metric) for s in fresh}
        return fresh


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _below(logs: dict[str, Any], key: str, threshold: float, name: str) -> list[Sign]:
    value = logs.get(key)
    return [Sign(name, key, float(value), threshold)] if _number(value) and value < threshold else []


def _above(logs: dict[str, Any], key: str, threshold: float, name: str) -> list[Sign]:
    value = logs.get(key)
    return [Sign(name, key, float(value), threshold)] if _number(value) and value > threshold else []


def _is_eval(logs: dict[str, Any]) -> bool:
    return any(key.startswith("eval_") for key in logs) and "loss" not in logs


class HealthCallback(TrainerCallback):
    """Adds health/* to each training log (before TensorBoard writes it) and warns once per sign."""

    def __init__(self, cfg: HealthConfig, family: str = "rl") -> None:
        self.monitor = HealthMonitor(cfg, family)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # the end-of-training summary (train_loss, ...) repeats no step; DPO's step logs carry train_runtime too
        if not logs or "train_loss" in logs:
            return
        if "loss" not in logs and not _is_eval(logs):
            return
        signs = self.monitor.check(logs)
        for sign in self.monitor.new(signs):
            log.warning(sign.line())
        scalars = self.monitor.scalars(signs, logs)
        logs.update(scalars)
        if state.log_history:
            state.log_history[-1].update(scalars)
