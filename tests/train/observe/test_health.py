"""Training-health signs from logged metric dicts: each fires past its threshold only, warns once, and shows as a
health/* scalar on every step it holds."""

from __future__ import annotations

import logging

import pytest

from pipeline.config.logging_schema import HealthConfig
from pipeline.train.observe.health import FIXES, HealthCallback, HealthMonitor

STEADY = {"loss": 0.1, "reward": 0.5, "entropy": 1.2, "kl": 0.01, "clip_ratio/region_mean": 0.01,
          "completions/clipped_ratio": 0.1, "rewards/correctness/std": 0.4}


@pytest.mark.parametrize(("key", "value", "sign"), [
    ("entropy", 0.01, "entropy_collapse"),
    ("kl", 3.0, "kl_blowup"),
    ("clip_ratio/region_mean", 0.5, "clipped_ratio"),
])
def test_each_threshold_sign_fires_past_its_threshold_only(key: str, value: float, sign: str) -> None:
    monitor = HealthMonitor(HealthConfig())
    assert monitor.check(STEADY) == []
    signs = monitor.check({**STEADY, key: value})
    assert [(s.name, s.metric, s.value) for s in signs] == [(sign, key, value)]
    line = signs[0].line()
    assert key in line and f"{value:.4g}" in line and FIXES[sign] in line


def test_a_term_that_never_varies_is_named_after_its_streak() -> None:
    monitor = HealthMonitor(HealthConfig(constant_term_steps=3))
    flat = {**STEADY, "rewards/format/std": 0.0}
    assert monitor.check(flat) == [] and monitor.check(flat) == []
    assert [s.metric for s in monitor.check(flat)] == ["rewards/format/std"]
    assert monitor.check({**flat, "rewards/format/std": 0.3}) == [] and monitor.check(flat) == []  # restarted


def test_truncation_is_named_only_once_it_persists() -> None:
    # a base model's first completions run to the limit until it learns to stop: step 1 alone is no sign
    monitor = HealthMonitor(HealthConfig(truncated_max=0.5, truncated_steps=3))
    cut = {**STEADY, "completions/clipped_ratio": 0.9}
    assert monitor.check(cut) == [] and monitor.check(STEADY) == []
    assert monitor.check(cut) == [] and monitor.check(cut) == []
    [sign] = monitor.check(cut)
    assert (sign.name, sign.metric, sign.value) == ("truncated", "completions/clipped_ratio", 0.9)
    assert "completions/clipped_ratio=0.9" in sign.line() and FIXES["truncated"] in sign.line()
    assert monitor.check({**cut, "completions/clipped_ratio": 0.5}) == []  # at the threshold: not above it
    assert monitor.check(cut) == []  # the streak restarted
    assert [s.name for s in HealthMonitor(HealthConfig(truncated_steps=1)).check(cut)] == ["truncated"]


def test_reward_rising_while_heldout_accuracy_falls_is_reward_hacking() -> None:
    monitor = HealthMonitor(HealthConfig(accuracy_drop=0.05))
    monitor.check({**STEADY, "reward": 0.3})
    assert monitor.check({"eval_accuracy": 0.40}) == []
    monitor.check({**STEADY, "reward": 0.2})
    assert monitor.check({"eval_accuracy": 0.30}) == []  # accuracy fell, but so did the reward: no sign
    monitor.check({**STEADY, "reward": 0.9})
    assert monitor.check({"eval_accuracy": 0.38}) == []  # reward up, accuracy within accuracy_drop of its best
    [sign] = monitor.check({"eval_accuracy": 0.20})
    assert sign.name == "reward_hacking" and sign.value == 0.20


def test_the_callback_warns_once_and_logs_scalars_every_step(caplog: pytest.LogCaptureFixture) -> None:
    callback = HealthCallback(HealthConfig())

    class State:
        log_history: list = []

    steps = [{**STEADY}, {**STEADY, "entropy": 0.01}, {**STEADY, "entropy": 0.02}, {**STEADY}]
    with caplog.at_level(logging.WARNING, logger="pipeline.train.observe.health"):
        for logs in steps:
            State.log_history = [dict(logs)]
            callback.on_log(None, State, None, logs=logs)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "entropy collapse: entropy=0.01" in warned[0]
    assert [logs["health/entropy_collapse"] for logs in steps] == [0.0, 1.0, 1.0, 0.0]
    assert State.log_history[-1]["health/kl_blowup"] == 0.0 and "health/reward_hacking" not in steps[0]
