"""Saving a model folder the run keeps (final/, best/): written beside its target and renamed when complete.

Every rank that holds weights takes part in `save_model` (ZeRO-3 gathers the shards on the way); only rank 0
writes files and renames, so a reader never sees half a model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase, Trainer

from pipeline.config.run_dir import RunDir, json_text, replacing
from pipeline.train.checkpoint.peft_init import mutates_base, save_converted


def save_model_dir(run_dir: RunDir, trainer: Trainer, tokenizer: PreTrainedTokenizerBase, target: Path,
                   note: tuple[str, Any] | None = None) -> Path:
    """Save the trainer's model (adapter or full) and tokenizer as `target`; `note` = (file name, JSON payload)
    written inside it, so the note and the weights appear together."""
    if not run_dir.writes:
        # this rank only joins the gathers; PEFT's save_pretrained creates its folder on every rank, so a folder
        # beside the target would reappear after rank 0's rename (an empty final.partial)
        with tempfile.TemporaryDirectory(prefix="not-written-") as scratch:
            trainer.save_model(scratch)
        return target
    with replacing(target) as partial:
        trainer.save_model(str(partial))
        model = trainer.accelerator.unwrap_model(trainer.model)
        if mutates_base(model):  # PiSSA / OLoRA: the adapter as it applies to the original base
            save_converted(model, run_dir, partial)
        tokenizer.save_pretrained(str(partial))
        if note is not None:
            (partial / note[0]).write_text(json_text(note[1]))
    return target
