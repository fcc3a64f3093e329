"""Environments' random state through a checkpoint: what is kept of an instance, the pool put back in TRL's order
(grown with the run's factories), and the callback's file beside the other checkpoint files."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.envs.calculator import calculate
from pipeline.envs.guess_number import GuessNumber
from pipeline.envs.limits import tools_environment
from pipeline.train.checkpoint.environment_state import (
    EnvironmentState,
    file_name,
    instance_state,
    pool_state,
    restore_pool,
)


class Dice:
    """An environment with every kind of generator we keep."""

    def __init__(self) -> None:
        self.py = random.Random(1)
        self.np = np.random.default_rng(2)
        self.legacy = np.random.RandomState(3)
        self.torch = torch.Generator().manual_seed(4)

    def reset(self, **row):
        return None

    def roll(self) -> tuple:
        return (self.py.random(), float(self.np.random()), float(self.legacy.rand()),
                float(torch.rand(1, generator=self.torch)))


class Counter:
    """An environment that says what its state is."""

    def __init__(self) -> None:
        self.n = 0

    def reset(self, **row):
        self.n += 1

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.n = state["n"]


def test_every_generator_kind_comes_back_where_it_was() -> None:
    env = Dice()
    env.roll()
    saved = pickle.loads(pickle.dumps(instance_state(env)))
    expected = env.roll()
    fresh = Dice()
    restore_pool({None: [fresh]}, {None: Dice}, {None: [saved]})
    assert fresh.roll() == expected
    assert Dice().roll() != expected  # a fresh one alone would not have matched


def test_an_environment_s_own_state_dict_wins_and_stateless_tools_save_nothing() -> None:
    env = Counter()
    env.reset()
    env.reset()
    assert instance_state(env) == {"state_dict": {"n": 2}}
    plain = tools_environment([calculate])()
    assert instance_state(plain) is None
    assert pool_state({None: [plain, plain]}) is None  # no file for a run whose environments hold no state


def test_guess_number_without_row_seeds_plays_the_same_games_after_a_restore() -> None:
    pool = {None: [GuessNumber(seed=7), GuessNumber(seed=8)]}
    for env in pool[None]:
        env.reset()  # a batch played: both instances drew a secret from their own RNG
    saved = pickle.loads(pickle.dumps(pool_state(pool)))
    for env in pool[None]:
        env.reset()
    continued = [env._secret for env in pool[None]]

    resumed = {None: [GuessNumber(seed=7)]}  # a new run holds only TRL's probe instance
    assert restore_pool(resumed, {None: lambda: GuessNumber(seed=7)}, saved) == 2
    assert len(resumed[None]) == 2
    for env in resumed[None]:
        env.reset()
    assert [env._secret for env in resumed[None]] == continued


def test_state_for_an_environment_the_run_no_longer_has_is_refused() -> None:
    saved = pool_state({"game": [GuessNumber(seed=1)]})
    with pytest.raises(ValueError, match="environment 'game'.*same env settings"):
        restore_pool({"other": [GuessNumber()]}, {"other": GuessNumber}, saved)


def fake_grpo(seed: int) -> SimpleNamespace:
    """What the callback reads of a GRPOTrainer: its pool, its factories, its rank."""
    return SimpleNamespace(_environment_pool={None: [GuessNumber(seed=seed)]},
                           environment_factories={None: GuessNumber}, args=SimpleNamespace(process_index=1))


def test_the_callback_writes_each_rank_s_file_into_the_checkpoint_and_reads_it_on_resume(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    trainer = fake_grpo(3)
    trainer._environment_pool[None][0].reset()
    callback = EnvironmentState(resume_from=None)
    callback.bind(trainer)
    callback.on_save(SimpleNamespace(output_dir=str(tmp_path), process_index=1), SimpleNamespace(global_step=2), None)
    assert [p.name for p in folder.iterdir()] == [file_name(1)] == ["environments_rank1.pkl"]

    after = trainer._environment_pool[None][0]._rng.random()
    resumed = fake_grpo(3)
    EnvironmentState(resume_from=str(folder)).bind(resumed)
    assert resumed._environment_pool[None][0]._rng.random() == after
