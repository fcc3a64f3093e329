"""Health signs of SFT and the preference stages on synthetic metric streams (the names TRL's SFT and DPO trainers
log): each fires on the stream that shows it and stays quiet on the healthy one next to it; a stage's family picks
its signs, so GRPO never gets the loss signs (its loss hovers near 0 by design) and DPO never the entropy one."""

from __future__ import annotations

import logging

import pytest

from pipeline.config.logging_schema import HealthConfig
from pipeline.config.stage_table import stage_spec
from pipeline.train.observe.health import FIXES, HealthCallback, HealthMonitor, health_family


def _stream(family: str, logs: list[dict], **thresholds) -> list[list[str]]:
    """The sign names of each log of the stream, in order."""
    monitor = HealthMonitor(HealthConfig(**thresholds), family)
    return [[s.name for s in monitor.check(dict(entry))] for entry in logs]


def test_a_loss_that_does_not_fall_is_flat_and_a_falling_one_is_not() -> None:
    flat = [{"loss": v} for v in (2.0, 2.1, 1.95, 2.0, 2.02, 1.99)]
    assert _stream("supervised", flat, loss_window=3) == [[]] * 5 + [["loss_flat"]]
    falling = [{"loss": v} for v in (2.0, 1.9, 1.8, 1.6, 1.5, 1.4)]
    assert _stream("supervised", falling, loss_window=3) == [[]] * 6


def test_a_grad_norm_spike_is_named_against_the_median_before_it() -> None:
    norms = [{"loss": 1.0, "grad_norm": v} for v in (1.0, 1.2, 0.9, 15.0, 1.1, 5.0)]
    assert _stream("supervised", norms, grad_spike_after=3) == [[], [], [], ["grad_spike"], [], []]
    monitor = HealthMonitor(HealthConfig(grad_spike_after=3), "supervised")
    for entry in norms[:3]:
        monitor.check(entry)
    [sign] = monitor.check(norms[3])
    assert (sign.metric, sign.value, sign.threshold) == ("grad_norm", 15.0, 10.0)  # 10 x median(1.0, 1.2, 0.9)


def test_eval_loss_rising_while_train_loss_falls_is_overfitting() -> None:
    logs = [{"loss": 2.0}, {"eval_loss": 1.0}, {"loss": 1.5}, {"eval_loss": 1.03}, {"loss": 1.0}, {"eval_loss": 1.2}]
    assert _stream("supervised", logs) == [[]] * 5 + [["overfitting"]]
    # eval loss up, but so is the training loss: a bad stretch, not overfitting
    rising = [{"loss": 1.0}, {"eval_loss": 1.0}, {"loss": 1.5}, {"eval_loss": 1.2}]
    assert _stream("supervised", rising) == [[]] * 4


def test_dpo_margins_collapsing_after_they_grew() -> None:
    logs = [{"loss": 0.69, "rewards/margins": v} for v in (0.0, 0.5, 1.0, 0.6, 0.4)]
    assert _stream("preference", logs) == [[], [], [], [], ["margin_collapse"]]
    tiny = [{"loss": 0.69, "rewards/margins": v} for v in (0.0, 0.05, 0.01)]  # never built a margin worth keeping
    assert _stream("preference", tiny) == [[]] * 3


def test_chosen_log_probs_falling_is_likelihood_displacement() -> None:
    logs = [{"loss": 0.6, "logps/chosen": v, "logps/rejected": v - 3} for v in (-20.0, -22.0, -26.0)]
    assert _stream("preference", logs) == [[], [], ["chosen_falling"]]
    monitor = HealthMonitor(HealthConfig(), "preference")
    signs = [monitor.check(entry) for entry in logs]
    line = signs[-1][0].line()
    assert "logps/chosen=-26" in line and "(threshold -25)" in line and FIXES["chosen_falling"] in line


def test_accuracy_stuck_at_one_half_for_a_streak() -> None:
    stuck = [{"loss": 0.69, "rewards/accuracies": v} for v in (0.5, 0.52, 0.48)]
    assert _stream("preference", stuck, chance_steps=3) == [[], [], ["accuracy_at_chance"]]
    learning = [{"loss": 0.69, "rewards/accuracies": v} for v in (0.5, 0.5, 0.8, 0.5, 0.5)]
    assert _stream("preference", learning, chance_steps=3) == [[]] * 5


def test_each_family_watches_its_own_signs() -> None:
    families = {name: health_family(stage_spec(name)) for name in ("grpo", "rloo", "dpo", "simpo", "sft", "rm",
                                                                  "distill")}
    assert families == {"grpo": "rl", "rloo": "rl", "dpo": "preference", "simpo": "preference",
                        "sft": "supervised", "rm": "supervised", "distill": "supervised"}
    flat_and_collapsed = [{"loss": 0.69, "entropy": 0.01}] * 30
    assert _stream("rl", flat_and_collapsed)[-1] == ["entropy_collapse"]  # GRPO: no loss sign (its loss is ~flat)
    assert _stream("preference", flat_and_collapsed)[-1] == ["loss_flat"]  # DPO logs entropy too: not its sign


def test_the_callback_warns_once_and_logs_its_familys_scalars(caplog: pytest.LogCaptureFixture) -> None:
    callback = HealthCallback(HealthConfig(chance_steps=2), "preference")

    class State:
        log_history: list = []

    steps = [{"loss": 0.69, "rewards/accuracies": 0.5}, {"loss": 0.69, "rewards/accuracies": 0.5},
             {"loss": 0.68, "rewards/accuracies": 0.5}, {"eval_loss": 0.7, "eval_rewards/accuracies": 0.5}]
    with caplog.at_level(logging.WARNING, logger="pipeline.train.observe.health"):
        for logs in steps:
            State.log_history = [dict(logs)]
            callback.on_log(None, State, None, logs=logs)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "accuracy at chance: rewards/accuracies=0.5" in warned[0]
    assert [logs.get("health/accuracy_at_chance") for logs in steps] == [0.0, 1.0, 1.0, None]
    assert {k for k in steps[0] if k.startswith("health/")} == {
        "health/loss_flat", "health/grad_spike", "health/margin_collapse", "health/chosen_falling",
        "health/accuracy_at_chance"}
    assert {k for k in steps[-1] if k.startswith("health/")} == {"health/overfitting"}  # evaluation: its sign only
