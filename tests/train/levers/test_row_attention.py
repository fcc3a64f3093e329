"""Padding-free rows attended one at a time (pipeline/train/levers/row_attention.py): a packed batch from TRL's own
collator gives the logits of each row run alone and the gradients of transformers' block-masked packed path, in
fp32 and composed with fp32_attention under bf16 autocast; calls without row bounds pass through; the model's
implementation is back on exit."""

from __future__ import annotations

import pytest
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from pipeline.train.levers.fp32_attention import FP32_ON_CPU, fp32_attention
from pipeline.train.levers.row_attention import ROWS_ON_CPU, row_attention
from pipeline.train.trl_surface import reached
from tests.helpers.tiny_models import tiny_lora_model

LENGTHS = (9, 14, 5)


def packed_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    rows = [{"input_ids": torch.randint(1, 128, (n,), generator=generator).tolist()} for n in LENGTHS]
    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True, return_position_ids=True)
    return collate(rows)


def loss_and_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    out = model(**batch, use_cache=False)
    out.loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return out.logits.detach(), out.loss.detach(), grads


def test_packed_rows_give_each_rows_own_logits_and_the_masked_paths_gradients() -> None:
    model = tiny_lora_model()
    batch = packed_batch()
    masked_logits, masked_loss, masked_grads = loss_and_grads(model, batch)
    before = reached["attention by row"]
    with row_attention(model):
        assert model.base_model.model.config._attn_implementation == ROWS_ON_CPU
        logits, loss, grads = loss_and_grads(model, batch)
    assert reached["attention by row"] == before + model.base_model.model.config.num_hidden_layers
    assert model.base_model.model.config._attn_implementation == "sdpa"

    start = 0
    with torch.no_grad():
        for n in LENGTHS:  # each row alone, no packing at all
            alone = model(input_ids=batch["input_ids"][:, start:start + n], use_cache=False).logits
            torch.testing.assert_close(logits[:, start:start + n], alone, rtol=1e-5, atol=1e-5)
            start += n
    torch.testing.assert_close(logits, masked_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, masked_loss, rtol=1e-6, atol=0)
    for got, want in zip(grads, masked_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_under_bf16_autocast_each_row_runs_through_fp32_attention() -> None:
    model = tiny_lora_model()
    batch = packed_batch()
    with fp32_attention(model), torch.autocast("cpu", dtype=torch.bfloat16):
        masked_logits, _, masked_grads = loss_and_grads(model, batch)
        fp32_calls = reached["fp32 attention"]
        with row_attention(model):
            logits, _, grads = loss_and_grads(model, batch)
        assert model.base_model.model.config._attn_implementation == FP32_ON_CPU  # fp32_attention's again
    layers = model.base_model.model.config.num_hidden_layers
    assert reached["fp32 attention"] == fp32_calls + layers * len(LENGTHS)
    # the same fp32 attention per row as over the masked packed row; the bf16 projections around it round alike
    torch.testing.assert_close(logits, masked_logits, rtol=0.02, atol=0.02)
    for got, want in zip(grads, masked_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0.05, atol=1e-3)


def test_batches_without_row_bounds_and_generation_pass_through() -> None:
    model = tiny_lora_model().eval()
    ids = torch.randint(1, 128, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        greedy = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
        before = reached["attention by row"]
        with row_attention(model):
            assert torch.equal(model(input_ids=ids).logits, plain)
            assert torch.equal(model.generate(input_ids=ids, max_new_tokens=3, do_sample=False), greedy)
    assert reached["attention by row"] == before


@pytest.mark.parametrize("switch", [row_attention, fp32_attention])
def test_other_attention_implementations_are_left_alone(switch) -> None:
    model = tiny_lora_model()
    model.base_model.model.set_attn_implementation("eager")
    with switch(model):
        assert model.base_model.model.config._attn_implementation == "eager"
    with switch(None):
        pass
