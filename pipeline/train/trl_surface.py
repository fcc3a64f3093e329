"""Every private TRL / transformers / torch name this pipeline relies on, in one place.

A library upgrade that renames or stops calling one of these would turn a speed-up or a check into a silent
no-op; tests/test_trl_surface.py fails instead: each name in `PRIVATE_HOOKS` must exist in the installed
libraries, and each hook must be reached in a one-step run (`HookCounter`). Public methods are used wherever
they exist (`compute_loss` for the per-micro-batch hook).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
import trl.kernels.chunked_logprob as chunked_logprob
import trl.trainer.utils as trl_utils
from transformers import Trainer, TrainerState
from trl import DPOTrainer, GRPOTrainer

# (owner, attribute): the private names used below; the test checks each one exists.
PRIVATE_HOOKS = (
    (GRPOTrainer, "_generate_single_turn"),  # one transformers generation call (no public generation hook)
    (GRPOTrainer, "_get_per_token_logps_and_entropies"),  # every log-prob forward (shared_prefix packs its rows)
    (GRPOTrainer, "_prepare_inputs"),  # splits a generation batch into micro-batches (shared_prefix regroups them)
    (DPOTrainer, "_compute_loss"),  # the policy and reference forwards of a DPO step (shared_prefix packs their rows)
    (Trainer, "_load_from_checkpoint"),  # the Trainer's own model/adapter checkpoint loader
    (torch, "multinomial"),  # swapped module-wide while generating (transformers samples through it)
    # TRL's fused LM head on CPU (pipeline/train/levers/lean_lm_head.py): the question that picks scoring only labelled
    # positions, and the torch stand-ins for its Triton tile kernels
    (trl_utils, "_use_triton"),
    (chunked_logprob, "_forward_tile"),
    (chunked_logprob, "_backward_tile"),
)
# Set on a trainer by TRL's GRPOTrainer.__init__: the latest generation batch it prints to console / wandb.
COMPLETION_LOG = "_logs"

# Hook name -> times reached in this process; tests read it after a short run.
HookCounter = Counter[str]
reached: HookCounter = Counter()


class HookedGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with two seams for subclasses: `micro_batch(inputs)` sees every training micro-batch
    before the loss, and `generation_context()` wraps every transformers generation call."""

    def micro_batch(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return inputs

    def generation_context(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        reached["compute_loss"] += 1
        return super().compute_loss(model, self.micro_batch(inputs), return_outputs, num_items_in_batch)

    def _generate_single_turn(self, *args: Any, **kwargs: Any):
        reached["_generate_single_turn"] += 1
        with self.generation_context():
            return super()._generate_single_turn(*args, **kwargs)


@contextmanager
def wrapped_generate(model: torch.nn.Module,
                     wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """`model.generate` replaced by `wrap(model.generate)` while inside; put back as it was after (the class's
    method, or an instance attribute of the model's own)."""
    original = model.generate
    own = model.__dict__.get("generate")
    model.generate = wrap(original)
    try:
        yield
    finally:
        if own is None:
            del model.generate
        else:
            model.generate = own


@contextmanager
def torch_multinomial(replacement: Callable[..., torch.Tensor]) -> Iterator[Callable[..., torch.Tensor]]:
    """Route every `torch.multinomial` call through `replacement` while inside; yields the original."""
    original = torch.multinomial
    torch.multinomial = replacement
    reached["torch.multinomial"] += 1
    try:
        yield original
    finally:
        torch.multinomial = original


def latest_completions(trainer: Any) -> dict[str, Any] | None:
    """GRPO's latest generation batch ({prompt, completion, rewards, advantages, ...}); None for other trainers."""
    logs = getattr(trainer, COMPLETION_LOG, None)
    if logs is not None:
        reached[COMPLETION_LOG] += 1
    return logs


def load_checkpoint_weights(trainer: Trainer, checkpoint: str) -> None:
    """Model (or adapter) weights and trainer state of a checkpoint, without training from it."""
    reached["_load_from_checkpoint"] += 1
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(f"{checkpoint}/trainer_state.json")
