"""The shared prefix through FlexAttention (pipeline/train/levers/prefix_flex.py): the block mask is the 4-D mask
element by element, which path each device and attention takes, and the registered attention function being plain
SDPA for every mask but the block mask. The numbers through the block mask (log-probs, TRL's loss, gradients) are
compared in test_shared_prefix.py and test_shared_prefix_dpo.py."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask
from transformers import AutoTokenizer, Qwen3ForCausalLM

from pipeline.train.levers.prefix_flex import DISPATCH, FLEX, MASK, attention_path, block_mask, use_block_mask
from pipeline.train.levers.prefix_mask import pack, pack_pairs
from pipeline.train.levers.shared_prefix import attention_said
from tests.helpers.exactness import allow_flex_backward_on_cpu, assert_same
from tests.helpers.tiny_models import TOKENIZER, tiny_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def packed_group_rows():
    """Two prompts (3 and 5 tokens, left-padded) x 3 completions of 0-6 tokens, rows interleaved."""
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 100, (3,), generator=gen), torch.randint(5, 100, (5,), generator=gen)]
    lengths = [6, 0, 2, 5, 1, 4]
    ids, mask = torch.zeros(6, 11, dtype=torch.long), torch.zeros(6, 11, dtype=torch.long)
    for row, length in enumerate(lengths):
        prompt = prompts[row % 2]
        ids[row, 5 - len(prompt) : 5], mask[row, 5 - len(prompt) : 5] = prompt, 1
        ids[row, 5 : 5 + length], mask[row, 5 : 5 + length] = torch.randint(5, 100, (length,), generator=gen), 1
    return pack(ids, mask, 6)


def test_the_block_mask_is_the_4d_mask_element_by_element() -> None:
    groups = packed_group_rows()
    pairs = pack_pairs(torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 6, 0]]), torch.tensor([[1] * 5, [1, 1, 1, 1, 0]]),
                       torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]]))
    assert (groups.segment == -1).any()  # the shorter packed row's padding is part of the comparison
    for packed in (groups, pairs):
        rows, size = packed.segment.shape
        dense = create_mask(block_mask(packed).mask_mod, rows, 1, size, size, device="cpu")
        assert dense.shape == packed.allowed.shape and torch.equal(dense, packed.allowed)
        # a branch sees its prompt and itself, not the other branches: fewer keys than a causal mask
        assert int(dense.sum()) < rows * size * (size + 1) // 2


def test_flex_on_cuda_the_4d_mask_on_cpu_and_where_flex_cannot_run() -> None:
    config = tiny_config(128, "sdpa")
    assert attention_path(CUDA, config)[0] == FLEX
    path, why = attention_path(CPU, config)
    assert path == MASK and "no CPU backward" in why
    assert attention_path(CUDA, tiny_config(128, "eager"))[0] == MASK  # eager applies the 4-D mask as given
    assert attention_path(CUDA, tiny_config(128, "flex_attention"))[0] == FLEX
    dropout = tiny_config(128, "sdpa")
    dropout.attention_dropout = 0.1
    path, why = attention_path(CUDA, dropout)
    assert path == MASK and "dropout" in why
    assert attention_path(CPU, tiny_config(128, DISPATCH))[0] == FLEX  # asked for by name (the tests' way on CPU)
    said = attention_said(Qwen3ForCausalLM(config), CUDA)
    assert said.startswith("through the FlexAttention block mask: CUDA")


def test_the_switched_model_is_plain_sdpa_for_every_other_forward() -> None:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(tiny_config(len(tokenizer), "sdpa")).eval()
    ids = torch.randint(5, 500, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding: transformers builds its own SDPA mask
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
    # CPU asks for the 4-D mask: nothing switches; CUDA asks for FlexAttention: the model moves to the dispatcher
    assert use_block_mask(model, model.config, CPU)[0] == MASK and model.config._attn_implementation == "sdpa"
    assert use_block_mask(model, model.config, CUDA)[0] == FLEX and model.config._attn_implementation == DISPATCH
    assert all(layer.self_attn.config._attn_implementation == DISPATCH for layer in model.model.layers)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, logits)
        assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                                          pad_token_id=tokenizer.pad_token_id), greedy)


@pytest.mark.parametrize("device", [
    "cpu",  # FlexAttention's eager reference implementation (torch's CPU backward guard lifted for the test)
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the compiled "
                                                  "FlexAttention kernel and its backward (bench/gpu_check.sh)")),
])
def test_the_model_gives_the_same_log_probs_and_gradients_through_the_block_mask(monkeypatch, device: str) -> None:
    """Without TRL: per-token log-probs of the completions, and their gradients, from the packed rows through the
    block mask, through the 4-D mask, and from the rows one by one (fp32, TF32 off)."""
    allow_flex_backward_on_cpu(monkeypatch)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: the comparison is of masks, not of rounding
    try:
        compare_through_the_masks(device)
    finally:
        torch.set_float32_matmul_precision(precision)


def compare_through_the_masks(device: str) -> None:
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(tiny_config(128, "sdpa")).to(device)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 100, (3,), generator=gen), torch.randint(5, 100, (5,), generator=gen)]
    ids, mask = torch.zeros(6, 11, dtype=torch.long), torch.zeros(6, 11, dtype=torch.long)
    for row, length in enumerate([6, 0, 2, 5, 1, 4]):
        prompt = prompts[row % 2]
        ids[row, 5 - len(prompt) : 5], mask[row, 5 - len(prompt) : 5] = prompt, 1
        ids[row, 5 : 5 + length], mask[row, 5 : 5 + length] = torch.randint(5, 100, (length,), generator=gen), 1
    ids, mask = ids.to(device), mask.to(device)
    packed = pack(ids, mask, 6)
    base = next(m for m in model.modules() if isinstance(m, Qwen3ForCausalLM))

    def per_row():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, 4:-1]
        return logits.log_softmax(-1).gather(-1, ids[:, 5:, None])[..., 0] * mask[:, 5:]

    def packed_rows(attn: str):
        base.set_attn_implementation(attn)
        attention = block_mask(packed) if attn == DISPATCH else packed.attention_mask(None)
        logits = model(input_ids=packed.input_ids, attention_mask=attention, position_ids=packed.position_ids).logits
        labels = packed.shift_labels
        scored = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0] * (labels >= 0)
        base.set_attn_implementation("sdpa")
        return packed.unpack(scored)

    results = []
    for forward in (per_row, lambda: packed_rows("sdpa"), lambda: packed_rows(DISPATCH)):
        model.zero_grad()
        logps = forward()
        (logps * torch.linspace(0.5, 1.5, logps.numel(), device=device).view_as(logps)).sum().backward()
        results.append([logps.detach(), *(p.grad.clone() for p in model.parameters())])
    assert (results[0][0][mask[:, 5:].bool()] < 0).all()
    for want in results[:2]:
        for got, expected in zip(results[2], want, strict=True):
            assert_same(got, expected)
