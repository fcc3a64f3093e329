"""Generation's fp32 Linear layers on oneDNN-packed weight copies (pipeline/train/levers/packed_linears.py): the same
logits as F.linear to fp32 rounding and the same tokens, through a merged LoRA adapter too, and fp32 logits under
autocast (with leave_autocast, autocast's own bf16 product); autograd, the adapter's own layers and non-fp32 weights
keep the plain layer; every layer's own forward is back on exit."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.levers.fp32_attention import fp32_attention
from pipeline.train.levers.merged_lora import merged_lora
from pipeline.train.levers.packed_linears import packable, packed_linears, packing_available
from tests.helpers.tiny_models import tiny_lora_model

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN packed linear")


def patched(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if "forward" in m.__dict__]


def test_packed_layers_give_fp32_logits_and_the_same_tokens_through_the_merged_adapter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_lora_model().eval()
    ids = torch.randint(0, 128, (4, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), merged_lora(model):
        plain = model(input_ids=ids).logits
        plain_tokens = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
        with packed_linears(model):
            layers = patched(model)
            plain_calls = []
            linear = torch.nn.functional.linear
            monkeypatch.setattr(torch.nn.functional, "linear", lambda *a, **k: plain_calls.append(1) or linear(*a, **k))
            packed = model(input_ids=ids).logits
            packed_tokens = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
            monkeypatch.undo()
    # every plain Linear of the model but the adapter's own: the base layers under it and the LM head
    adapters = [m for n, m in model.named_modules() if n.split(".")[-2:-1] in (["lora_A"], ["lora_B"])]
    assert adapters and not set(layers) & set(adapters)
    assert len(layers) == sum(packable(m) for m in model.modules()) - len(adapters) > 0
    assert model.get_output_embeddings() in layers
    assert patched(model) == []
    assert plain_calls == []  # no layer fell back to F.linear
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(packed_tokens, plain_tokens)


def test_autograd_and_bf16_weights_keep_the_plain_layer_and_autocast_gets_fp32() -> None:
    model = tiny_lora_model()
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(6))
    with packed_linears(model):
        assert patched(model)  # entered with grad on (TRL turns it off inside its generation call)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()  # the packed op has no backward: under autograd each layer ran F.linear
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    # under autocast (accelerate wraps a bf16 run's forward in it) the packed layers compute in fp32: with the adapter
    # merged and attention in fp32 (as a bf16 CPU run generates), the fp32 model's logits, not autocast's bf16 ones
    model.eval()
    with torch.no_grad(), merged_lora(model), fp32_attention(model):
        fp32 = model(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(input_ids=ids).logits
            with packed_linears(model):
                packed = model(input_ids=ids).logits
    torch.testing.assert_close(packed, fp32, rtol=1e-5, atol=1e-5)
    assert (autocast.float() - fp32).abs().max() > 1e-3
    head = model.get_output_embeddings()
    head.weight.data = head.weight.data.bfloat16()
    assert not packable(head)
    with packed_linears(model, enabled=False):
        assert patched(model) == []


def test_leave_autocast_keeps_autocasts_product_and_packs_the_fp32_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    # GRPO's sampling in a bf16 run: the model's own call under accelerate's autocast keeps autocast's bf16 product
    # (the numerics its learning was measured on), transformers' inner fp32 steps compute on the packed copies
    model = tiny_lora_model().eval()
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), merged_lora(model):
        fp32 = model(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(input_ids=ids).logits
        with packed_linears(model, leave_autocast=True):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                kept = model(input_ids=ids).logits
            plain_calls = []
            linear = torch.nn.functional.linear
            monkeypatch.setattr(torch.nn.functional, "linear", lambda *a, **k: plain_calls.append(1) or linear(*a, **k))
            packed = model(input_ids=ids).logits
            monkeypatch.undo()
    assert torch.equal(kept, autocast)
    assert plain_calls == []
    torch.testing.assert_close(packed, fp32, rtol=1e-5, atol=1e-5)
