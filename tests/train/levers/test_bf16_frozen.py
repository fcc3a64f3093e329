"""Frozen weights held in bf16 (pipeline/train/levers/bf16_frozen.py): under bf16 autocast the loss and every LoRA
gradient equal those of the fp32-weight model exactly; the LM head (tied or not), trainable weights and norms stay
fp32; full_precision and the context's exit put back the very fp32 tensors."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.levers.bf16_frozen import bf16_sampling, castable, frozen_bf16, full_precision, holds_bf16
from pipeline.train.levers.merged_lora import merged_lora
from tests.helpers.tiny_models import tiny_lora_model


def loss_and_grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("tied", [False, True])
def test_autocast_training_is_unchanged_and_the_originals_come_back(tied: bool) -> None:
    model = tiny_lora_model()
    if tied:
        model.base_model.model.lm_head.weight = model.base_model.model.model.embed_tokens.weight
    ids = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(1))
    originals = {n: p.data_ptr() for n, p in model.named_parameters()}
    reference_loss, reference_grads = loss_and_grads(model, ids)

    with frozen_bf16(model):
        held = {n: p.dtype for n, p in model.named_parameters()}
        loss, grads = loss_and_grads(model, ids)
    assert torch.equal(loss, reference_loss)
    assert grads.keys() == reference_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.equal(grad, reference_grads[name]), name
    # what was cast: the frozen base of every adapted layer; never an adapter, norm, embedding or the head
    cast = {n for n, dtype in held.items() if dtype == torch.bfloat16}
    assert cast and all("base_layer" in n for n in cast)
    assert not any("lora_" in n or "norm" in n or "embed" in n or "lm_head" in n for n in cast)
    for name, param in model.named_parameters():
        assert param.data_ptr() == originals[name], name
        assert param.dtype == torch.float32


def test_full_precision_swaps_the_fp32_originals_back_for_generation() -> None:
    model = tiny_lora_model().eval()
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fp32_logits = model(input_ids=ids).logits
        with frozen_bf16(model):
            with pytest.raises(RuntimeError):  # no autocast: bf16 weights meet fp32 activations
                model(input_ids=ids)
            # the inner model a wrapper holds is matched too
            with full_precision(model.base_model.model):
                assert torch.equal(model(input_ids=ids).logits, fp32_logits)
            assert any(p.dtype == torch.bfloat16 for p in model.parameters())
            # GRPO's generation: fp32 originals, merged LoRA into their copies, generate (patched) nested inside
            before = {n: (p.data_ptr(), p.dtype) for n, p in model.named_parameters()}
            with full_precision(model), merged_lora(model):
                merged = model(input_ids=ids).logits
                greedy = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
                assert all(p.dtype == torch.float32 for p in model.parameters())
            torch.testing.assert_close(merged, fp32_logits, atol=1e-5, rtol=1e-5)
            assert {n: (p.data_ptr(), p.dtype) for n, p in model.named_parameters()} == before
            # generate alone (other trainers' sampling) runs on the fp32 originals too
            assert torch.equal(model.generate(input_ids=ids, max_new_tokens=3, do_sample=False), greedy)
        assert "generate" not in model.__dict__


def test_nothing_is_cast_in_full_fine_tuning_or_outside_the_context() -> None:
    model = tiny_lora_model()
    for param in model.parameters():
        param.requires_grad_(True)
    assert castable(model) == []
    with full_precision(model):  # a no-op when nothing is held
        assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("tied", [False, True])
def test_bf16_sampling_runs_on_the_copies_and_puts_the_head_and_generate_back(tied: bool) -> None:
    model = tiny_lora_model().eval()
    inner = model.base_model.model
    if tied:
        inner.lm_head.weight = inner.model.embed_tokens.weight
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fp32_logits = model(input_ids=ids).logits
        with frozen_bf16(model):
            head = inner.lm_head.weight
            assert holds_bf16(model) and "generate" in model.__dict__
            with bf16_sampling(model), merged_lora(model):
                assert inner.lm_head.weight.dtype == torch.bfloat16 and "generate" not in model.__dict__
                assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if "base_layer" in n)
                logits = model(input_ids=ids).logits
                model.generate(input_ids=ids, max_new_tokens=3, do_sample=True)
            assert inner.lm_head.weight is head and "generate" in model.__dict__
            if tied:
                assert inner.lm_head.weight is inner.model.embed_tokens.weight
        assert not holds_bf16(model)
    # bf16 rounding of weights and activations: close to the fp32 model, not equal
    torch.testing.assert_close(logits.float(), fp32_logits, atol=0.1, rtol=0.05)
    assert not torch.equal(logits.float(), fp32_logits)


def test_bf16_sampling_scores_tokens_as_training_does_with_the_adapter_unmerged() -> None:
    """GRPO's generation levers on bf16-held weights: the adapter stays unmerged, so the sampler's logits are the
    training forward's (autocast over the same bf16 copies); a merge into the bf16 copies would move them."""
    from types import SimpleNamespace

    from peft.tuners.lora import LoraLayer

    from pipeline.train.levers.grpo_trainer import GRPOLevers, LeveredGRPOTrainer

    model = tiny_lora_model().eval()
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(4))
    trainer = SimpleNamespace(levers=GRPOLevers(merge_lora=True, bf16_sampling=True), model=model, _turns=None,
                              accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    with torch.no_grad(), frozen_bf16(model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            training = model(input_ids=ids).logits.float()
        with LeveredGRPOTrainer._generation_levers(trainer):
            assert not any(m.merged for m in model.modules() if isinstance(m, LoraLayer))
            sampler = model(input_ids=ids).logits.float()
        with bf16_sampling(model), merged_lora(model):
            merged = model(input_ids=ids).logits.float()
        trainer.levers = GRPOLevers(merge_lora=True)  # fp32 sampling still merges
        with LeveredGRPOTrainer._generation_levers(trainer):
            assert all(m.merged for m in model.modules() if isinstance(m, LoraLayer))
    assert torch.equal(sampler, training)
    assert not torch.equal(merged, training)
