"""Prefilling each distinct prompt once (train/levers/prefill_once.py) samples what `generate` samples: the same
logits at every step (so the same distribution) and, from the same seed, the same tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from pipeline.train.levers import prefill_once as prefill_module
from pipeline.train.levers.prefill_once import (
    MIN_SAVED_TOKENS,
    opening_first,
    prefill_once,
    prefilled_inputs,
    shared_opening,
)
from pipeline.train.trl_surface import reached
from tests.helpers.tiny_models import repeated_prompts, tiny_lora_model


def sample(model, ids, mask, prefill: bool, seed: int = 3):
    config = GenerationConfig(do_sample=True, max_new_tokens=12, temperature=1.0, top_k=0, top_p=1.0,
                              output_logits=True, return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    torch.manual_seed(seed)
    if not prefill:
        return model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    with prefill_once(model):
        return model.generate(input_ids=ids, attention_mask=mask, generation_config=config)


def test_prefilled_generation_samples_the_same_tokens_from_the_same_logits() -> None:
    model = tiny_lora_model().eval()
    ids, mask = repeated_prompts()
    plain, shared = sample(model, ids, mask, prefill=False), sample(model, ids, mask, prefill=True)
    assert torch.equal(shared.sequences, plain.sequences)
    for got, want in zip(shared.logits, plain.logits, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert "generate" not in model.__dict__  # the patch is gone after the block


def test_the_cache_is_computed_once_per_distinct_prompt() -> None:
    model = tiny_lora_model().eval()
    ids, mask = repeated_prompts()
    calls = []
    hook = model.get_base_model().model.embed_tokens.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    cache = prefilled_inputs(model, ids, mask).cache
    hook.remove()
    assert calls == [torch.Size([2, 6, 32])]  # 2 distinct prompts, all tokens but the last
    assert cache.get_seq_length() == 6 and cache.layers[0].keys.size(0) == 6  # expanded to every row
    # rows 0, 2, 4 share the long prompt: identical cached keys
    assert torch.equal(cache.layers[0].keys[0], cache.layers[0].keys[4])
    assert not torch.equal(cache.layers[0].keys[0], cache.layers[0].keys[1])
    # nothing repeats: no cache, generate runs as it is
    assert prefilled_inputs(model, ids[:2], mask[:2]) is None


def opening_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Four rows, three distinct prompts: a shared 10-token opening (a system prompt) + 2, 5 or 3 tokens of their own,
    the first prompt twice; left-padded to 15."""
    torch.manual_seed(2)
    opening = torch.randint(3, 128, (10,))
    prompts = [torch.cat([opening, torch.randint(3, 128, (n,))]) for n in (2, 5, 3)]
    ids, mask = torch.zeros(4, 15, dtype=torch.long), torch.zeros(4, 15, dtype=torch.long)
    for row, prompt in enumerate([prompts[0], prompts[1], prompts[0], prompts[2]]):
        ids[row, 15 - len(prompt):], mask[row, 15 - len(prompt):] = prompt, 1
    return ids, mask


@pytest.fixture
def small_savings_pay(monkeypatch):
    """The tiny prompts' 10-token opening saves 20 token forwards: worth sharing here, to test the mechanics."""
    monkeypatch.setattr(prefill_module, "MIN_SAVED_TOKENS", 16)


def test_a_common_opening_is_computed_once_for_every_prompt_and_samples_the_same(small_savings_pay) -> None:
    model = tiny_lora_model().eval()
    ids, mask = opening_prompts()
    shapes = []
    hook = model.get_base_model().model.embed_tokens.register_forward_hook(lambda m, i, o: shapes.append(o.shape[:2]))
    before = reached["shared_opening"]
    plain, shared = sample(model, ids, mask, prefill=False), sample(model, ids, mask, prefill=True)
    hook.remove()
    assert reached["shared_opening"] == before + 1
    # plain: the whole batch, then one token a step; shared: the opening once, the 3 distinct rests, then decoding
    assert shapes[0] == torch.Size([4, 15])
    assert shapes[12:15] == [torch.Size([1, 10]), torch.Size([3, 4]), torch.Size([4, 1])]
    assert torch.equal(shared.sequences, plain.sequences)  # the caller's prompt columns come back as they were
    for got, want in zip(shared.logits, plain.logits, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_opening_goes_first_and_the_padding_becomes_a_hole(small_savings_pay) -> None:
    ids, mask = opening_prompts()
    assert shared_opening(ids, mask) == 10
    laid, holes = opening_first(ids, mask, 10)
    assert torch.equal(laid[1], ids[1]) and torch.equal(holes[1], mask[1])  # the longest row has no padding
    assert holes[0].tolist() == [1] * 10 + [0] * 3 + [1] * 2
    assert torch.equal(laid[0][holes[0].bool()], ids[0][mask[0].bool()])  # the same tokens in the same order
    # the same prompt in every row: all but its last token are the opening
    same = torch.arange(3, 23).repeat(2, 1)
    assert shared_opening(same, torch.ones_like(same)) == 19


def test_an_opening_is_shared_only_where_it_saves_enough() -> None:
    def prompts(distinct: int, opening: int) -> torch.Tensor:
        return torch.cat([torch.full((distinct, opening), 7), torch.arange(distinct)[:, None] + 10], dim=1)

    # GRPO's 4 arithmetic prompts a step with SmolLM2's 27-token system prompt: 81 saved, not worth a forward
    few = prompts(4, 27)
    assert shared_opening(few, torch.ones_like(few)) == 0
    # the held-out batch of 50 problems: 49 x 27 saved
    many = prompts(50, 27)
    assert shared_opening(many, torch.ones_like(many)) == 27
    edge = prompts(2, MIN_SAVED_TOKENS)
    assert shared_opening(edge, torch.ones_like(edge)) == MIN_SAVED_TOKENS


def test_rows_not_left_padded_share_no_opening(small_savings_pay) -> None:
    model = tiny_lora_model().eval()
    ids, mask = opening_prompts()
    assert prefilled_inputs(model, ids, mask).opening == 10
    right = torch.stack([torch.cat([i[m.bool()], i[~m.bool()]]) for i, m in zip(ids, mask, strict=True)])
    prefilled = prefilled_inputs(model, right, mask.flip(1))
    assert prefilled.opening == 0 and torch.equal(prefilled.input_ids, right)


def test_sliding_window_models_share_repeated_prompts_only() -> None:
    config = Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                         max_window_layers=0)
    model = Qwen2ForCausalLM(config).eval()
    ids, mask = opening_prompts()
    prefilled = prefilled_inputs(model, ids, mask)
    assert prefilled.opening == 0 and torch.equal(prefilled.input_ids, ids)
    assert prefilled.cache.layers[0].keys.size(0) == 4
