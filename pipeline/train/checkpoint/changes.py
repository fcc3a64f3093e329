"""Resuming with a changed recipe: the config a checkpoint was trained with (<run>/config.yaml, written by the run
before training) against this run's, key by key. Each difference in what is learned is listed and the resume
refused, unless `resume.allow_changes=true`; then the log says which new values take effect and which the restored
state overrides. Keys that change only what is recorded (checkpoint cadence, logging, evaluation) change freely.

What a resume restores (transformers' Trainer loading the optimizer and scheduler): the optimizer's state_dict, whose
param_groups carry lr, initial_lr, weight_decay and the Adam betas/eps, and the scheduler's, whose base_lrs are the
checkpoint's learning rate. The scheduler's shape (its lambda, warmup, total steps) is rebuilt from the new config
and applied at the restored step; everything else (batch, rewards, data, eval, max_steps...) is read anew.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.config.user_errors import UserError

log = logging.getLogger(__name__)

# Bookkeeping that differs between the first run and its resume by design.
IGNORED = ("resume", "run_id", "output_dir", "dry_run", "checkpoint.allow_changes")
# What is recorded, not what is learned: changed freely on resume (said in one info line), never refused.
RECORDING = ("stage.save_steps", "checkpoint.", "logging.", "eval.", "paths.", "stage.eval_max_new_tokens",
             "hw.eval_batch")
# key -> why the new value does not apply: the restored optimizer/scheduler state holds the old one.
RESTORED = {
    "stage.learning_rate": "the restored scheduler keeps the checkpoint's base learning rate",
    "stage.weight_decay": "the restored optimizer's param_groups keep the old weight_decay",
    "stage.trl.adam_beta1": "the restored optimizer's param_groups keep the old betas",
    "stage.trl.adam_beta2": "the restored optimizer's param_groups keep the old betas",
    "stage.trl.adam_epsilon": "the restored optimizer's param_groups keep the old eps",
}
# Prefixes whose change makes the checkpoint's weights or optimizer state not fit: never resumable.
STRUCTURAL = ("model.", "peft.", "quant.", "stage.name", "stage.optim")
# Changes that apply, but not quite as a fresh run would apply them.
NOTES = {
    "seed": "the random states are the checkpoint's; the data order follows the new seed",
    "stage.lr_scheduler": "the new schedule, from the restored step, on the checkpoint's base learning rate",
    "stage.warmup_steps": "the new schedule, from the restored step, on the checkpoint's base learning rate",
    "stage.warmup_ratio": "the new schedule, from the restored step, on the checkpoint's base learning rate",
}


class ResumeChangeError(UserError, ValueError):
    """The resumed run's config differs from its checkpoint's; the message lists each difference and the fix."""


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    # an empty dict adds no keys, so {} and an absent key compare equal (stage.trl: {} -> {adam_beta1: 0.8})
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (checkpoint's value, this run's value)} for every key that differs (absent = None)."""
    a, b = flatten(old), flatten(new)
    return {key: (a.get(key), b.get(key)) for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key) and not key.startswith(IGNORED)}


def _line(key: str, old: Any, new: Any, why: str = "") -> str:
    return f"  - {key}: {old!r} -> {new!r}" + (f"  ({why})" if why else "")


def check_resume_changes(checkpoint: str, current: dict[str, Any], allow: bool) -> None:
    """Refuse (ResumeChangeError) or, with allow, log what applies; nothing when the config is unchanged or the
    checkpoint's run left no config.yaml (written by an older version)."""
    source = Path(checkpoint).parent.parent / "config.yaml"
    if not source.is_file():
        return
    changed = differences(OmegaConf.to_container(OmegaConf.load(source)), current)
    recording = {k: changed.pop(k) for k in list(changed) if k.startswith(RECORDING)}
    if recording:
        log.info("resume: changed, and taking effect (checkpoints, logging, evaluation only):\n%s",
                 "\n".join(_line(k, *v) for k, v in recording.items()))
    if not changed:
        return
    where = f"{Path(checkpoint).name} was trained with (its run's {source})"
    structural = {k: v for k, v in changed.items() if k.startswith(STRUCTURAL)}
    if structural:
        raise ResumeChangeError(
            f"resume: these values differ from the ones {where}; the checkpoint's weights and optimizer state "
            "do not fit them:\n" + "\n".join(_line(k, *v) for k, v in structural.items())
            + "\nFix: resume with the checkpoint's values, or start a new run (another output_dir).")
    if not allow:
        raise ResumeChangeError(
            f"resume: {len(changed)} value(s) differ from the ones {where}:\n"
            + "\n".join(_line(k, *v, RESTORED.get(k, "")) for k, v in changed.items())
            + "\nFix: resume with the same values, or add resume.allow_changes=true to continue with these changes "
            "(checkpoint.allow_changes: true in a config file).")
    applied = [_line(k, *v, NOTES.get(k, "")) for k, v in changed.items() if k not in RESTORED]
    kept = [_line(k, *v, RESTORED[k]) for k, v in changed.items() if k in RESTORED]
    lines = [f"resume.allow_changes=true: resuming {checkpoint} with {len(changed)} changed value(s)"]
    if applied:
        lines += ["takes effect from the resumed step:", *applied]
    if kept:
        lines += ["does NOT take effect (the restored optimizer/scheduler state keeps the checkpoint's value):", *kept]
    log.warning("\n".join(lines))
