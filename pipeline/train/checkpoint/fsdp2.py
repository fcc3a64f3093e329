"""FSDP2 checkpoints: model and optimizer as a torch distributed checkpoint (DCP), each rank writing its shards.

The Trainer refuses to save the optimizer of a model sharded at load time (model/fsdp2.py), so under zero=fsdp2 it
runs with `save_only_model` (it still writes the gathered weights, or the adapter, and trainer_state.json into
checkpoint-N/: export and `which=best` read those) and this callback writes the rest into the same folder before
CheckpointCallback marks it complete:

    checkpoint-N/fsdp2/.metadata, __<rank>_0.distcp   trainable weights + optimizer state, sharded (DCP)
    checkpoint-N/scheduler.pt, rng_state_<rank>.pth   the LR schedule (rank 0) and every rank's random streams

On resume the Trainer restores trainer_state.json, the data position and the RNG files (its own format, written
here); `on_train_begin` then loads the DCP shards into the freshly built model and optimizer, and the schedule.
DCP reshards on load, so a checkpoint written by 2 ranks resumes on 4 (the per-rank random streams start anew).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pipeline.train.runtime.fsdp2 import reshard

log = logging.getLogger(__name__)

FOLDER = "fsdp2"
SCHEDULER = "scheduler.pt"


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # frozen weights never change: a LoRA run's checkpoint holds the adapter (and its optimizer state) only; not
    # strict, since the model then lacks the frozen keys on load (dcp.load still fails on any trainable key missing)
    return StateDictOptions(ignore_frozen_params=True, strict=False)


def _states(model: Any, optimizer: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    reshard(model)  # a generation since the last backward (held-out samples at this step) left whole weights behind
    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    # ignore_frozen_params misses a frozen weight reached under a second name (the tied LM head)
    frozen = {name for name, param in model.named_parameters(remove_duplicate=False) if not param.requires_grad}
    return {"model": {k: v for k, v in model_state.items() if k not in frozen}, "optimizer": optim_state}


def rng_states() -> dict[str, Any]:
    """This rank's random streams under the keys the Trainer's resume reads from rng_state_<rank>.pth."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all()
    return states


def save_fsdp2(path: Path, model: Any, optimizer: Any, scheduler: Any, rank: int) -> None:
    """Collective: every rank writes its shards of `path`/fsdp2/, its RNG file; rank 0 the schedule."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_states(model, optimizer), checkpoint_id=str(path / FOLDER))
    torch.save(rng_states(), path / f"rng_state_{rank}.pth")
    if rank == 0:
        torch.save(scheduler.state_dict(), path / SCHEDULER)


def load_fsdp2(path: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
    """Collective: the DCP shards of `path` into this run's model and optimizer (resharded to this world size)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    states = _states(model, optimizer)
    dcp.load(states, checkpoint_id=str(path / FOLDER))
    set_state_dict(model, optimizer, model_state_dict=states["model"], optim_state_dict=states["optimizer"],
                   options=_options())
    scheduler.load_state_dict(torch.load(path / SCHEDULER, weights_only=True))


class Fsdp2Checkpoint(TrainerCallback):
    """Writes the FSDP2 part of each checkpoint (listed before CheckpointCallback, which then marks it complete),
    and loads it back when the run resumes from `checkpoint` (a checkpoint-N folder, or None)."""

    def __init__(self, checkpoint: str | None = None) -> None:
        self.checkpoint = checkpoint

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        if self.checkpoint is not None:
            load_fsdp2(Path(self.checkpoint), model, optimizer, lr_scheduler)
            log.info("FSDP2: model and optimizer shards loaded from %s", self.checkpoint)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                model: Any = None, optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        save_fsdp2(path, model, optimizer, lr_scheduler, args.process_index)
