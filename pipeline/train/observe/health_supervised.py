"""Training-health signs of SFT and of the preference stages (DPO and its kin), read from the metrics TRL logs: the
failure modes axolotl's training-stability guide lists for them. Each is one `Sign` (pipeline/train/observe/
health.py warns once and logs `health/<sign>`); a sign whose metric a trainer does not log never shows.

    SFT (and any stage logging loss):
    loss_flat          mean loss of the last `loss_window` logged steps not `loss_min_drop` below the first window's
    grad_spike         grad_norm > grad_spike_factor x the median of the logged steps before it
    overfitting        eval loss `eval_rise` above its best while the training loss is below what it was then
    Preference pairs (DPO, and ORPO / SimPO, which log the same names):
    margin_collapse    rewards/margins below half of its best (once the best passed margin_min)
    chosen_falling     logps/chosen `displacement_nats` below its first logged value (likelihood displacement)
    accuracy_at_chance rewards/accuracies within `chance_band` of 0.5 for `chance_steps` logged steps in a row
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from pipeline.config.logging_schema import HealthConfig

SFT_FIXES = {
    "loss_flat": "raise stage.learning_rate (LoRA usually wants 1e-4..2e-4), check warm-up and that the rows' "
                 "completion tokens are not all masked (data.format, the chat template)",
    "grad_spike": "lower stage.learning_rate, keep stage.max_grad_norm clipping (1.0), add warm-up "
                  "(stage.warmup_ratio=0.03), and look for an odd row in that step (very long or garbled)",
    "overfitting": "stop earlier or train fewer epochs (stage.num_epochs), keep best/ (eval.every_steps with "
                   "checkpoint.best_metric=eval/loss), add data, or lower stage.learning_rate / raise peft.dropout",
}
PREFERENCE_FIXES = {
    "margin_collapse": "lower stage.learning_rate or raise stage.beta (a tighter pull to the reference); check the "
                       "pairs for rows whose chosen and rejected swap meaning",
    "chosen_falling": "likelihood displacement: both answers are pushed down. Use stage.loss_type=apo_zero (it "
                      "raises chosen) or sigmoid_norm, lower stage.learning_rate, or warm up with SFT on chosen "
                      "(stage=sft_then_dpo)",
    "accuracy_at_chance": "the policy does not tell chosen from rejected: raise stage.learning_rate, check that "
                          "chosen and rejected really differ and are labelled right, or try stage.beta 0.1..0.5",
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


@dataclass
class SupervisedSigns:
    """The SFT signs over the logs seen so far. `check(logs)` -> [(name, metric, value, threshold)]."""

    cfg: HealthConfig
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    best_eval: float | None = None
    train_at_best: float | None = None

    def check(self, logs: dict[str, Any]) -> list[tuple[str, str, float, float]]:
        if _number(logs.get("eval_loss")):
            return self._overfitting(float(logs["eval_loss"]))
        signs = []
        if _number(logs.get("loss")):
            self.losses.append(float(logs["loss"]))
            signs += self._loss_flat()
        if _number(logs.get("grad_norm")):
            signs += self._grad_spike(float(logs["grad_norm"]))
        return signs

    def _loss_flat(self) -> list[tuple[str, str, float, float]]:
        window = self.cfg.loss_window
        if len(self.losses) < 2 * window:
            return []
        first, last = statistics.fmean(self.losses[:window]), statistics.fmean(self.losses[-window:])
        ceiling = first * (1 - self.cfg.loss_min_drop)
        metric = f"loss (mean of the last {window} logged steps)"
        return [("loss_flat", metric, last, ceiling)] if last > ceiling else []

    def _grad_spike(self, norm: float) -> list[tuple[str, str, float, float]]:
        before, self.grad_norms = self.grad_norms, [*self.grad_norms, norm]
        if len(before) < self.cfg.grad_spike_after:
            return []
        limit = self.cfg.grad_spike_factor * statistics.median(before)
        return [("grad_spike", "grad_norm", norm, limit)] if limit > 0 and norm > limit else []

    def _overfitting(self, eval_loss: float) -> list[tuple[str, str, float, float]]:
        train = self.losses[-1] if self.losses else None
        if self.best_eval is None or eval_loss < self.best_eval:
            self.best_eval, self.train_at_best = eval_loss, train
            return []
        limit = self.best_eval * (1 + self.cfg.eval_rise)
        falling = None not in (train, self.train_at_best) and train < self.train_at_best
        return [("overfitting", "eval/loss", eval_loss, limit)] if eval_loss > limit and falling else []


@dataclass
class PreferenceSigns:
    """The preference-pair signs over the logs seen so far (training logs only: TRL logs eval_rewards/... apart)."""

    cfg: HealthConfig
    best_margin: float | None = None
    first_chosen: float | None = None
    chance_streak: int = 0

    def check(self, logs: dict[str, Any]) -> list[tuple[str, str, float, float]]:
        signs = []
        margin, chosen, accuracy = (logs.get(k) for k in ("rewards/margins", "logps/chosen", "rewards/accuracies"))
        if _number(margin):
            self.best_margin = max(float(margin), self.best_margin if self.best_margin is not None else margin)
            if self.best_margin > self.cfg.margin_min and margin < self.best_margin / 2:
                signs.append(("margin_collapse", "rewards/margins", float(margin), self.best_margin / 2))
        if _number(chosen):
            self.first_chosen = float(chosen) if self.first_chosen is None else self.first_chosen
            floor = self.first_chosen - self.cfg.displacement_nats
            if chosen < floor:
                signs.append(("chosen_falling", "logps/chosen", float(chosen), floor))
        if _number(accuracy):
            near = abs(accuracy - 0.5) <= self.cfg.chance_band
            self.chance_streak = self.chance_streak + 1 if near else 0
            if self.chance_streak >= self.cfg.chance_steps:
                signs.append(("accuracy_at_chance", "rewards/accuracies", float(accuracy), 0.5))
        return signs
