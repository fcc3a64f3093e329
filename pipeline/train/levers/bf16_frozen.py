"""Frozen weights held in bf16 while a bf16-autocast run trains on CPU (`hw.precision=bf16`, LoRA).

Autocast casts each fp32 weight to bf16 at every matmul. A frozen weight (the base under LoRA, a separate
reference model) gets no grad, so autocast's cast cache does not keep it: every forward, every backward and every
decode step casts the whole base again, and on CPU that cast costs more than the bf16 matmul saves (SmolLM2, 2
cores: 32 x 16-token sampling 113 s under autocast vs 40 s in fp32). Here each frozen `nn.Linear` weight is cast
once, before training. Autocast leaves a bf16 weight as it is, so every matmul gets the very bf16 operand it got
before: training numbers are unchanged (tests/train/levers/test_bf16_frozen.py: losses and LoRA gradients equal).

Kept fp32: trainable weights (LoRA adapters, modules_to_save, full fine-tuning), norms and embeddings (autocast keeps
them fp32), and the LM head whose log-softmax stays fp32 (the lean LM head folds its tiles in fp32). The fp32
originals stay in memory; `full_precision` swaps them back (no copy) for generation (under accelerate's autocast
wrapper of the prepared model's forward the held-out evaluation's Linear layers compute in fp32 through
levers/packed_linears.py) -- held-out accuracy and the completions table score the fp32 model as before -- and they
return when training ends, so what is saved and exported is the fp32 model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

log = logging.getLogger(__name__)


def cpu_bf16(cfg) -> bool:
    """The run trains under bf16 autocast on CPU."""
    from pipeline.config.enums import Device, Precision

    return cfg.hw.device == Device.cpu and cfg.hw.precision == Precision.bf16


def holds_frozen_bf16(cfg) -> bool:
    """hw.bf16_frozen_weights applies: bf16 autocast on CPU in one process (DDP's start-up broadcast and the
    sharded engines are not proven with mixed-dtype frozen weights; ZeRO on CPU stays fp32 anyway)."""
    from pipeline.config.derived import world_size

    return cfg.hw.bf16_frozen_weights and cpu_bf16(cfg) and world_size(cfg) == 1


# model id -> [(weight, fp32 original, bf16 copy)] while frozen_bf16 is active on that model
_HELD: dict[int, list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]]] = {}


def castable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Frozen fp32 weights of plain nn.Linear layers, the LM head (and whatever shares its weight) left out."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    keep = {id(head.weight)} if head is not None else set()
    if hasattr(model, "get_input_embeddings"):
        keep.add(id(model.get_input_embeddings().weight))
    weights, seen = [], set()
    for module in model.modules():
        # exactly nn.Linear: bitsandbytes' and other subclasses hold their own weight formats
        if type(module) is not torch.nn.Linear:
            continue
        weight = module.weight
        if weight.requires_grad or weight.dtype != torch.float32 or id(weight) in keep | seen:
            continue
        seen.add(id(weight))
        weights.append(weight)
    return weights


@contextmanager
def frozen_bf16(*models: torch.nn.Module | None) -> Iterator[None]:
    """While inside, the models' frozen Linear weights hold bf16 copies and their `generate` runs on the fp32
    originals; the fp32 originals are back on exit."""
    held: list[tuple[torch.nn.Module, list]] = []
    for model in (m for m in models if m is not None):
        triples = [(w, w.data, w.data.to(torch.bfloat16)) for w in castable(model)]
        if not triples:
            continue
        for weight, _, copy in triples:
            weight.data = copy
        _HELD[id(model)] = triples
        _generate_in_full_precision(model)
        held.append((model, triples))
    if held:
        size = sum(orig.numel() for _, t in held for _, orig, _ in t)
        log.info("bf16 autocast on CPU: %d frozen Linear weights (%.1fM values) held in bf16 while training, cast "
                 "once instead of at every matmul; trainable weights, norms, embeddings, the LM head and generation "
                 "stay fp32", sum(len(t) for _, t in held), size / 1e6)
    try:
        yield
    finally:
        for model, triples in held:
            for weight, original, _ in triples:
                weight.data = original
            _HELD.pop(id(model), None)
            model.__dict__.pop("generate", None)


def _generate_in_full_precision(model: torch.nn.Module) -> None:
    generate = model.generate

    def fp32_generate(*args: Any, **kwargs: Any) -> Any:
        with full_precision(model):
            return generate(*args, **kwargs)

    model.generate = fp32_generate


@contextmanager
def full_precision(model: torch.nn.Module) -> Iterator[None]:
    """The fp32 originals back in place of the bf16 copies (a generation on them: sampling, held-out
    accuracy, the completions table). A weight holding something else (merged_lora's merged copy of the
    originals) is left alone, so this nests under merged_lora and under itself."""
    swapped = [t for t in _held_for(model) if t[0].data_ptr() == t[2].data_ptr()]
    for weight, original, _ in swapped:
        weight.data = original
    try:
        yield
    finally:
        for weight, _, copy in swapped:
            weight.data = copy


@contextmanager
def bf16_sampling(model: torch.nn.Module) -> Iterator[None]:
    """GRPO sampling on the bf16 copies under bf16 autocast (`hw.bf16_sampling`), the LM head as a bf16 copy too
    (tied or not: the Parameter is swapped on the head alone and put back), the fp32 `generate` patch set aside.
    The sampler's numbers then differ from training's by bf16 rounding (docs/benchmarks.md measures how much);
    transformers samples from fp32 logits either way."""
    patched = model.__dict__.pop("generate", None)
    head = model.get_output_embeddings()
    original = head.weight
    head.weight = torch.nn.Parameter(original.detach().to(torch.bfloat16), requires_grad=False)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        head.weight = original
        if patched is not None:
            model.generate = patched


def holds_bf16(model: torch.nn.Module) -> bool:
    return bool(_held_for(model))


def _held_for(model: torch.nn.Module) -> list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]]:
    """The held triples whose weights belong to `model` (it may be the trained model, its PeftModel or DDP wrapper,
    or the inner model a wrapper holds)."""
    if not _HELD:
        return []
    ids = {id(p) for p in model.parameters()}
    return [t for triples in _HELD.values() for t in triples if id(t[0]) in ids]
