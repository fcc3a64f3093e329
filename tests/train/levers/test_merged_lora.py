"""Merged-LoRA generation (pipeline/train/levers/merged_lora.py) generates like the adapter and restores the
weights exactly, also when generation fails."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.levers.merged_lora import merged_lora
from tests.helpers.tiny_models import tiny_lora_model


def test_merged_lora_generates_like_the_adapter_and_restores_weights_exactly() -> None:
    model = tiny_lora_model().eval()
    ids = torch.randint(0, 128, (3, 12))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
        with merged_lora(model):
            assert all(m.merged for m in model.modules() if hasattr(m, "merged"))
            merged_logits = model(input_ids=ids).logits
        after_logits = model(input_ids=ids).logits
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-5, rtol=1e-5)
    # exact: the merge went into copies, the originals are back (no merge/unmerge rounding)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    assert not any(m.merged for m in model.modules() if hasattr(m, "merged"))
    assert torch.equal(after_logits, adapter_logits)


def test_merged_lora_restores_weights_when_generation_fails() -> None:
    model = tiny_lora_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"), merged_lora(model):
        raise RuntimeError("boom")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
