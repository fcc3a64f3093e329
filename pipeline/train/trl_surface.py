"""The fence: every private TRL / transformers / torch / DeepSpeed name this pipeline relies on, in one list.

A private name (`_x`) of a library may appear only here and in `pipeline/train/levers/`, and each one must be listed
in `PRIVATE_HOOKS` (tests/sanity/test_fence.py scans the package). A library upgrade that renames one, or stops
using it, would turn a speed-up or a check into a silent no-op; tests/train/test_trl_surface.py fails instead: each
listed name must still exist in the installed library (as an attribute of its owner, or in the owner's source for
attributes set on instances), and the hooks must be reached in a one-step GRPO run (`reached`). Public methods are
used wherever they exist (`compute_loss` for the per-micro-batch hook).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # transformers' Trainer imports peft (and through it bitsandbytes): only where it runs
    from transformers import Trainer


@dataclass(frozen=True)
class Private:
    """A library name we depend on: `owner` ("module" or "module:Class") has `name`; `why` says what for."""

    owner: str
    name: str
    why: str


_GRPO, _DPO = "trl:GRPOTrainer", "trl:DPOTrainer"
_GEN = "transformers.generation.utils:GenerationMixin"
_ZERO_INIT = "deepspeed.runtime.zero.partition_parameters:Init"
PRIVATE_HOOKS: tuple[Private, ...] = (
    # levers/grpo_trainer.py: the seams of TRL's GRPO loop
    Private(_GRPO, "_generate_single_turn", "one transformers generation call: the generation levers wrap it"),
    Private(_GRPO, "_generate", "one rollout batch, every tool turn of it: turn_reuse holds its cache across them"),
    Private(_GRPO, "_get_per_token_logps_and_entropies", "every log-prob forward: shared_prefix packs its rows"),
    Private(_GRPO, "_prepare_inputs", "splits a generation batch into micro-batches: shared_prefix regroups them"),
    Private(_GRPO, "_buffered_inputs", "the micro-batches of the current generation batch (instance attribute)"),
    Private(_GRPO, "_step", "which micro-batch of the buffer is next (instance attribute)"),
    Private(_GRPO, "_entropy_bonus_enabled", "an entropy bonus normalises per micro-batch (instance attribute)"),
    Private(_GRPO, "_generate_and_score_completions", "one generation batch scored: zero_std_groups labels its "
            "groups and resample generates fresh prompts through it"),
    Private(_GRPO, "_calculate_rewards", "every process's rewards of a batch: which groups teach nothing"),
    Private(_GRPO, "_logs", "the latest generation batch TRL prints to console / wandb (instance attribute)"),
    # checkpoint/environment_state.py
    Private(_GRPO, "_environment_pool", "the reused environment instances whose random state a checkpoint keeps "
            "(instance attribute)"),
    # levers/shared_prefix_dpo.py
    Private(_DPO, "_compute_loss", "the policy and reference forwards of a DPO step: shared_prefix packs their rows"),
    # levers/shared_prefix.py
    Private("transformers:PretrainedConfig", "_attn_implementation", "whether a custom 4-D mask is applied as given"),
    # checkpoint/resume.py through load_checkpoint_weights
    Private("transformers:Trainer", "_load_from_checkpoint", "the Trainer's own model/adapter checkpoint loader"),
    # levers/lean_lm_head.py: TRL's fused LM head on CPU
    Private("trl.trainer.utils", "_use_triton", "the question that picks scoring only the labelled positions"),
    Private("trl.kernels.chunked_logprob", "_forward_tile", "torch stand-in for TRL's Triton forward tile kernel"),
    Private("trl.kernels.chunked_logprob", "_backward_tile", "torch stand-in for TRL's Triton backward tile kernel"),
    # levers/compact_decoding.py: generate's own prefill and loop, around our decode loop
    Private(_GEN, "_prefill", "generate's first forward, before our loop takes over"),
    Private(_GEN, "_sample", "generate's own loop, where rows cannot leave the batch"),
    Private(_GEN, "_update_model_kwargs_for_generation", "cache and mask bookkeeping between decode steps"),
    Private("transformers.generation.utils", "_pad_token_tensor", "the pad token generate pads finished rows with"),
    # levers/zero3_slices.py: ZeRO-3 loading without gathering
    Private("transformers.modeling_utils", "_load_state_dict_into_zero3_model", "transformers' ZeRO-3 loader"),
    Private("transformers.modeling_utils", "_is_hf_initialized", "marks a weight loaded (skips its random init)"),
    Private(_ZERO_INIT, "_zero_init_param", "zero.Init's per-weight broadcast and partition"),
    Private(_ZERO_INIT, "_convert_to_deepspeed_param", "makes a parameter partitionable"),
    Private(_ZERO_INIT, "_aligned_size", "a partitioned weight's padded size"),
    Private(_ZERO_INIT, "_partition_world_size", "ranks a weight is partitioned over"),
    # levers/packed_linears.py: oneDNN's packed-weight linear, as torch's inductor uses it for frozen CPU weights
    Private("torch:ops.mkldnn", "_reorder_linear_weight", "packs a Linear weight once for generation"),
    Private("torch:ops.mkldnn", "_linear_pointwise", "the linear on a packed weight"),
)

# Hook name -> times reached in this process; tests read it after a short run.
HookCounter = Counter[str]
reached: HookCounter = Counter()


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
    """Route every `torch.multinomial` call (a public name, swapped module-wide: transformers samples through it)
    through `replacement` while inside; yields the original."""
    original = torch.multinomial
    torch.multinomial = replacement
    reached["torch.multinomial"] += 1
    try:
        yield original
    finally:
        torch.multinomial = original


def latest_completions(trainer: Any) -> dict[str, Any] | None:
    """GRPO's latest generation batch ({prompt, completion, rewards, advantages, ...}); None for other trainers."""
    logs = getattr(trainer, "_logs", None)
    if logs is not None:
        reached["_logs"] += 1
    return logs


def environment_pool(trainer: Any) -> dict[Any, list[Any]]:
    """GRPO's environment instances by environment name, in the order TRL hands them out; {} without environments."""
    pool = getattr(trainer, "_environment_pool", None)
    if pool is not None:
        reached["_environment_pool"] += 1
    return pool or {}


def load_checkpoint_weights(trainer: Trainer, checkpoint: str) -> None:
    """Model (or adapter) weights and trainer state of a checkpoint, without training from it."""
    reached["_load_from_checkpoint"] += 1
    trainer._load_from_checkpoint(checkpoint)
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(f"{checkpoint}/trainer_state.json")
