"""Checkpoints you can trust: a completeness marker, discovery for `resume=auto|PATH`, keep-last-N, and a
checkpoint on SIGTERM/SIGINT.

The Trainer writes `checkpoints/checkpoint-N/` file by file (model, optimizer, scheduler, RNG states, trainer
state; under DeepSpeed a `global_stepN/` folder of per-rank ZeRO shards -- see checkpoint/layouts.py). A process
killed half-way leaves a folder that *looks* like a checkpoint; so only a folder holding `checkpoint_complete.json`
-- written last, by rank 0, by rename, after every rank has written its own files, listing every file of every rank
and its size -- counts as complete. Resuming checks the listed sizes again, so a truncated file is reported by name
instead of failing deep inside torch.load, and checks that the run has as many processes as a DeepSpeed checkpoint
was sharded over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pipeline.config.run_dir import RunDir, replacing
from pipeline.config.user_errors import UserError
from pipeline.train.checkpoint import layouts
from pipeline.train.runtime.distributed import any_rank, barrier
from pipeline.train.trl_surface import load_checkpoint_weights

log = logging.getLogger(__name__)

MARKER = "checkpoint_complete.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(UserError, ValueError):
    """A checkpoint named by `resume=` cannot be used; the message names the file and the fix."""


def checkpoint_root(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoints


def step_of(path: Path) -> int:
    match = _STEP.match(path.name)
    return int(match.group(1)) if match else -1


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint-N folder (complete or not), oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and step_of(p) >= 0), key=step_of)


def resolve_resume(resume: str | None, run_dir: Path, world_size: int = 1) -> str | None:
    """The checkpoint folder to resume from, or None to start fresh. Raises CheckpointError."""
    if resume is None or resume == "":
        return None
    if resume == "auto":
        complete = [p for p in checkpoints(run_dir) if is_complete(p)]
        discard_incomplete(run_dir, after=step_of(complete[-1]) if complete else -1)
        if not complete:
            log.info("resume=auto: no complete checkpoint in %s, starting from step 0", checkpoint_root(run_dir))
            return None
        path = complete[-1]
    else:
        path = Path(resume)
    check_checkpoint(path, world_size)
    log.info("resuming from %s (step %d)", path, step_of(path))
    return str(path)


def check_checkpoint(path: Path, world_size: int = 1) -> None:
    """Raise CheckpointError unless `path` is a complete, readable checkpoint this run's ranks can load."""
    fix = f"Fix: resume=auto picks the newest complete one, or name another checkpoint-N under {path.parent}."
    if not path.is_dir():
        raise CheckpointError(f"resume={path}: no such checkpoint folder. {fix}")
    if not is_complete(path):
        raise CheckpointError(
            f"resume={path}: {MARKER} is missing, so the checkpoint was not completely written "
            f"(the run stopped while saving). {fix}"
        )
    try:
        marker = json.loads((path / MARKER).read_text())
        listed = marker["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"resume={path}: {MARKER} is unreadable ({err}). {fix}") from err
    for name, size in listed.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            found = file.stat().st_size if file.is_file() else "missing"
            raise CheckpointError(
                f"resume={path}: file {name} is damaged (expected {size} bytes, found {found}). {fix}"
            )
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"resume={path}: trainer_state.json is unreadable ({err}). {fix}") from err
    _check_world_size(path, marker.get("world_size") or layouts.written_by(path), world_size)


def _check_world_size(path: Path, written: int, now: int) -> None:
    """DeepSpeed shards the optimizer over the ranks that wrote it and cannot load it into another number of
    ranks; a plain/DDP checkpoint holds whole states, so it loads into any number (only the per-rank RNG streams
    differ, so the continuation is not bit-for-bit the one the old world size would have trained)."""
    if written == now:
        return
    if layouts.layout(path) == layouts.DEEPSPEED:
        raise CheckpointError(
            f"resume={path}: this DeepSpeed checkpoint was written by {written} processes and this run has {now}; "
            f"ZeRO optimizer shards load only into the same number of ranks. Fix: resume with {written} processes "
            f"(hw.num_processes x hw.num_nodes = {written}), or start a new run from its weights with "
            f"init_from={path} (a fresh optimizer)."
        )
    log.warning("resume=%s: written by %d process(es), resumed with %d: weights, optimizer, scheduler and data "
                "position carry over; per-rank random streams start anew, so sampling differs from an "
                "uninterrupted run", path, written, now)


def mark_complete(path: Path, world_size: int = 1) -> None:
    """Write the marker last, via rename, after checking what the Trainer should have written (all ranks)."""
    missing = layouts.missing(path, world_size)
    if missing:
        raise CheckpointError(f"{path}: the trainer did not write {', '.join(missing)}; not marking it complete.")
    files = {
        str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file() and f.name != MARKER
    }
    record = {"step": step_of(path), "world_size": world_size, "layout": layouts.layout(path), "files": files}
    with replacing(path / MARKER) as partial:
        partial.write_text(json.dumps(record, indent=1) + "\n")


def rotate(run_dir: Path, keep: int) -> None:
    """Delete the oldest complete checkpoints beyond `keep` (0 keeps all), and incomplete ones older than the
    newest complete one: a resume would never pick them."""
    found = checkpoints(run_dir)
    complete = [p for p in found if is_complete(p)]
    doomed = complete[:-keep] if keep > 0 else []
    newest = step_of(complete[-1]) if complete else -1
    doomed += [p for p in found if not is_complete(p) and step_of(p) < newest]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)


def discard_incomplete(run_dir: Path, after: int) -> None:
    # A half-written checkpoint-N would be written over by the resumed run, mixing old and new files.
    for path in checkpoints(run_dir):
        if not is_complete(path) and step_of(path) > after:
            log.warning("removing incomplete checkpoint %s (the run stopped while writing it)", path)
            shutil.rmtree(path, ignore_errors=True)


class CheckpointCallback(TrainerCallback):
    """After each save, on every rank: wait until all ranks have written their files, mark the checkpoint
    complete (rank 0), keep the newest `keep`, and wait again -- a rank that ran ahead and exited (a SIGTERM stop)
    would make its launcher kill rank 0 before the marker is written."""

    def __init__(self, run_dir: Path, keep: int) -> None:
        self.run_dir, self.keep = run_dir, keep

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        barrier()
        if state.is_world_process_zero:
            mark_complete(checkpoint_root(self.run_dir) / f"checkpoint-{state.global_step}", args.world_size)
            rotate(self.run_dir, self.keep)
        barrier()


class SignalCheckpoint(TrainerCallback):
    """SIGTERM/SIGINT: finish the current optimizer step, save a checkpoint, stop. A second signal kills as usual.

    Only a flag is set in the handler: saving from inside a signal handler could interrupt a half-done step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            # Second signal: the user means it.
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        log.warning("%s received: saving a checkpoint after this step, then stopping", signal.Signals(signum).name)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        # A signal may reach one rank only (kill PID); every rank must save -- DeepSpeed's save is collective.
        if any_rank(self.received is not None, args.device):
            self.received = self.received or signal.SIGTERM
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def already_done(checkpoint: str | None, max_steps: int) -> bool:
    """Whether the checkpoint has reached the run's last step. The Trainer would still run one more step when
    resumed there (its max_steps check comes after each step), so such a resume only loads the weights."""
    if checkpoint is None:
        return False
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    last = max_steps if max_steps > 0 else state.get("max_steps", 0)
    return last > 0 and state.get("global_step", 0) >= last


def load_finished(trainer: Any, checkpoint: str) -> None:
    """Weights and trainer state of a checkpoint that ended training (see `already_done`)."""
    log.info("%s already reached the last step: loading its weights, no further training", checkpoint)
    load_checkpoint_weights(trainer, checkpoint)
