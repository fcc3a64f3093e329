"""PiSSA / OLoRA runs (`peft.init=pissa|olora`): the adapter starts as the top of each base weight's decomposition
and the base keeps only the rest, so an adapter saved as trained only fits that changed base. The adapter as
initialised is kept in <run>/peft_init before the first step, and final/ and best/ are saved through peft's
`path_initial_model_for_weight_conversion`: a plain LoRA (rank 2r) on the original base, which export's merge,
evaluate, chat and a chained stage's init_from load like any other adapter. Resumable checkpoints keep the raw
adapter: a resumed run decomposes the same base again before loading it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from pipeline.config.run_dir import RunDir, replacing

INIT_DIR = "peft_init"


def mutates_base(model: Any) -> bool:
    """Whether the model's adapter was initialised by PiSSA or OLoRA (peft's init_lora_weights names)."""
    config = getattr(model, "peft_config", {}).get("default")
    init = getattr(config, "init_lora_weights", True)
    return isinstance(init, str) and init.startswith(("pissa", "olora"))


class InitialAdapter(TrainerCallback):
    """Saves the adapter as initialised into <run>/peft_init once, before the first step (a resumed run keeps its
    own: the conversion needs the start of this run's training)."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir

    def on_train_begin(self, args, state, control, model: Any = None, **kwargs: Any) -> None:
        target = self.run_dir.root / INIT_DIR
        if not self.run_dir.writes or state.global_step > 0 or target.exists() or not mutates_base(model):
            return
        with replacing(target) as partial:
            model.save_pretrained(str(partial))


def save_converted(model: Any, run_dir: RunDir, folder: Path) -> None:
    """Replace the raw adapter in `folder` by its conversion onto the original base."""
    initial = run_dir.root / INIT_DIR
    if not (initial / "adapter_config.json").exists():
        raise RuntimeError(f"peft.init PiSSA/OLoRA: the initial adapter {initial} is missing, so final/ cannot be "
                           "converted onto the original base. Start the run again without resume.")
    from safetensors.torch import load_file, save_file

    weights = folder / "adapter_model.safetensors"
    model.save_pretrained(str(folder))
    # peft's conversion returns the LoRA tensors only: modules_to_save (trained in full) are put back as saved
    kept = {k: v for k, v in load_file(str(weights)).items() if "lora_" not in k}
    with tempfile.TemporaryDirectory() as scratch:  # peft rewrites the folder's config: work on a copy
        copy = Path(scratch) / INIT_DIR
        shutil.copytree(initial, copy)
        model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(copy))
    save_file({**load_file(str(weights)), **kept}, str(weights), metadata={"format": "pt"})
