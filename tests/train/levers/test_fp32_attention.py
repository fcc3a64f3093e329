"""Attention in fp32 under CPU bf16 autocast (pipeline/train/levers/fp32_attention.py): inside the context the model's
attention is exactly SDPA over the fp32-cast q, k, v (outputs and gradients), bf16 projections around it; outside
autocast nothing changes; the model's own implementation is back on exit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.train.levers.fp32_attention import FP32_ON_CPU, fp32_attention, sdpa_fp32_on_cpu
from pipeline.train.trl_surface import reached
from tests.helpers.tiny_models import tiny_lora_model


def attention_inputs(seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, heads, 7, 8, generator=generator).to(torch.bfloat16).requires_grad_()
               for heads in (4, 2, 2))
    return q, k, v


@pytest.mark.parametrize("mask", ["none", "bool", "additive"])
def test_attention_is_fp32_sdpa_of_the_cast_inputs_outputs_and_gradients(mask: str) -> None:
    module = tiny_lora_model().base_model.model.model.layers[0].self_attn  # 4 query heads over 2 kv heads
    keep = torch.ones(2, 1, 7, 7, dtype=torch.bool).tril()
    keep[1, :, :, :2] = False  # row 1 left-padded by two
    keep[1, :, :2, 0] = True  # every query sees something
    masks = {"none": None, "bool": keep, "additive": torch.zeros(keep.shape, dtype=torch.bfloat16)
             .masked_fill(~keep, torch.finfo(torch.bfloat16).min)}
    q, k, v = attention_inputs(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = sdpa_fp32_on_cpu(module, q, k, v, masks[mask], scaling=module.scaling)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 7, 4, 8)
    out.float().square().sum().backward()

    rq, rk, rv = (t.detach().float().requires_grad_() for t in (q, k, v))
    reference = F.scaled_dot_product_attention(
        rq, rk.repeat_interleave(2, 1), rv.repeat_interleave(2, 1), scale=module.scaling,
        attn_mask=None if mask == "none" else keep, is_causal=mask == "none").transpose(1, 2).to(torch.bfloat16)
    reference.float().square().sum().backward()
    assert torch.equal(out, reference)
    for got, want in zip((q, k, v), (rq, rk, rv), strict=True):
        assert got.grad.dtype == torch.bfloat16
        torch.testing.assert_close(got.grad, want.grad.to(torch.bfloat16), atol=0, rtol=0.01)

    if mask == "none":  # bf16 SDPA under autocast is another computation: the wrapper is what changes it
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = F.scaled_dot_product_attention(q.detach(), k.detach().repeat_interleave(2, 1),
                                                   v.detach().repeat_interleave(2, 1), scale=module.scaling,
                                                   is_causal=True).transpose(1, 2)
        assert not torch.equal(plain, out)


def test_the_model_runs_its_layers_through_it_under_autocast_and_gets_sdpa_back() -> None:
    model = tiny_lora_model().eval()
    config = model.base_model.model.config
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32_logits = model(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_logits = model(input_ids=ids).logits
        before = reached["fp32 attention"]
        with fp32_attention(model):
            assert config._attn_implementation == FP32_ON_CPU
            assert torch.equal(model(input_ids=ids).logits, fp32_logits)  # fp32 passes straight through
            assert reached["fp32 attention"] == before
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(input_ids=ids).logits
            assert reached["fp32 attention"] == before + config.num_hidden_layers
            model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)
    assert config._attn_implementation == "sdpa"
    torch.testing.assert_close(logits.float(), fp32_logits, atol=0.1, rtol=0.05)
    assert not torch.equal(logits, bf16_logits)
