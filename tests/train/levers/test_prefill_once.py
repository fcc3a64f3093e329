"""Prefilling each distinct prompt once (train/levers/prefill_once.py) samples what `generate` samples: the same
logits at every step (so the same distribution) and, from the same seed, the same tokens."""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from pipeline.train.levers.prefill_once import prefill_once, prefilled_cache
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
    cache = prefilled_cache(model, ids, mask)
    hook.remove()
    assert calls == [torch.Size([2, 6, 32])]  # 2 distinct prompts, all tokens but the last
    assert cache.get_seq_length() == 6 and cache.layers[0].keys.size(0) == 6  # expanded to every row
    # rows 0, 2, 4 share the long prompt: identical cached keys
    assert torch.equal(cache.layers[0].keys[0], cache.layers[0].keys[4])
    assert not torch.equal(cache.layers[0].keys[0], cache.layers[0].keys[1])
    # nothing repeats: no cache, generate runs as it is
    assert prefilled_cache(model, ids[:2], mask[:2]) is None
