"""Environments' own random state in checkpoints, so `resume=auto` replays the episodes the uninterrupted run plays.

TRL keeps a pool of environment instances per environment and reuses them (`reset`) batch after batch. An
instance whose episodes draw on its own RNG (GuessNumber on a row without a seed) would restart from its seed
after a resume and play other games than the run it continues. Saved per rank as `environments_rank<r>.pkl` inside
the checkpoint, before the completeness marker lists its files: an instance's `state_dict()` where it defines one
(restored with its `load_state_dict`), else each attribute that is a `random.Random`, numpy `Generator` /
`RandomState` or `torch.Generator`. Instances with neither save nothing; a run whose environments hold no state
writes no file. Restoring tops the pool up to the saved size with the run's own factories, in the saved order,
which is the order TRL hands instances out.
"""

from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from pipeline.train.trl_surface import environment_pool

log = logging.getLogger(__name__)


def file_name(process: int) -> str:
    return f"environments_rank{process}.pkl"


def instance_state(env: Any) -> dict[str, Any] | None:
    """What to save of one environment instance; None when it holds no random state we know how to keep."""
    if callable(getattr(env, "state_dict", None)):
        return {"state_dict": env.state_dict()}
    found = {}
    for name, value in vars(env).items():
        if isinstance(value, random.Random):
            found[name] = ("random", value.getstate())
        elif isinstance(value, np.random.Generator):
            found[name] = ("numpy", value.bit_generator.state)
        elif isinstance(value, np.random.RandomState):
            found[name] = ("numpy_legacy", value.get_state())
        elif isinstance(value, torch.Generator):
            found[name] = ("torch", value.get_state())
    return {"attributes": found} if found else None


def restore_instance(env: Any, saved: dict[str, Any] | None) -> None:
    if saved is None:
        return
    if "state_dict" in saved:
        env.load_state_dict(saved["state_dict"])
        return
    for name, (kind, state) in saved["attributes"].items():
        value = getattr(env, name)
        if kind == "random":
            value.setstate(state)
        elif kind == "numpy":
            value.bit_generator.state = state
        elif kind == "numpy_legacy":
            value.set_state(state)
        else:
            value.set_state(state)


def pool_state(pool: dict[Any, list[Any]]) -> dict[Any, list[dict[str, Any] | None]] | None:
    states = {name: [instance_state(env) for env in envs] for name, envs in pool.items()}
    return states if any(s is not None for envs in states.values() for s in envs) else None


def restore_pool(pool: dict[Any, list[Any]], factories: dict[Any, Any], states: dict[Any, list[Any]]) -> int:
    """Put saved states back into the pool (growing it with the factories); returns how many instances got one."""
    restored = 0
    for name, saved in states.items():
        if name not in pool:
            raise ValueError(f"the checkpoint has state for environment {name!r}, which this run does not have "
                             f"(environments now: {sorted(map(str, pool))}); resume with the same env settings")
        envs = pool[name]
        while len(envs) < len(saved):
            envs.append(factories[name]())
        for env, state in zip(envs, saved, strict=False):
            restore_instance(env, state)
            restored += state is not None
    return restored


class EnvironmentState(TrainerCallback):
    """Saves the pool's random state with each checkpoint (every rank its own file) and restores it on resume.

    Put it before CheckpointCallback: that one marks the checkpoint complete, listing the files present then."""

    def __init__(self, resume_from: str | None) -> None:
        self.resume_from = resume_from
        self.trainer: Any = None

    def bind(self, trainer: Any, eval_prompts: Any = None) -> None:
        self.trainer = trainer
        if self.resume_from is None:
            return
        path = Path(self.resume_from) / file_name(trainer.args.process_index)
        if path.is_file():
            states = pickle.loads(path.read_bytes())
            restored = restore_pool(environment_pool(trainer), trainer.environment_factories, states)
            log.info("resume: %d environment instance(s) got their random state back from %s", restored, path.name)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        states = pool_state(environment_pool(self.trainer)) if self.trainer is not None else None
        if states is not None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / file_name(args.process_index)).write_bytes(pickle.dumps(states))
