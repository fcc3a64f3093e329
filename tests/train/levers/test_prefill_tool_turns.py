"""prefill_once on the batches TRL's tool loop generates from: each follow-up turn is one row per rollout (its whole
history: prompt, call, tool result), left-padded to the longest, where two rollouts may share a history. Prefilling
those once gives generate's own tokens and logits, so prefill_once stays on in tool runs."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

from pipeline.train.levers.prefill_once import prefill_once
from pipeline.train.trl_surface import reached


def follow_up_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Four histories of 9, 9 (the same one), 14 and 5 tokens, left-padded to 14: a follow-up turn's batch."""
    torch.manual_seed(1)
    shared, long, short = torch.randint(3, 128, (9,)), torch.randint(3, 128, (14,)), torch.randint(3, 128, (5,))
    ids, mask = torch.zeros(4, 14, dtype=torch.long), torch.zeros(4, 14, dtype=torch.long)
    for row, history in enumerate([shared, shared, long, short]):
        ids[row, 14 - len(history):], mask[row, 14 - len(history):] = history, 1
    return ids, mask


def test_prefill_once_samples_generates_own_tokens_on_a_follow_up_turn() -> None:
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256)
    model = Qwen3ForCausalLM(config).eval()
    ids, mask = follow_up_batch()
    generation = GenerationConfig(do_sample=True, max_new_tokens=10, output_logits=True, top_k=0, top_p=1.0,
                                  return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    outputs, before = [], reached["prefilled_cache"]
    for prefill in (False, True):
        torch.manual_seed(3)
        if prefill:
            with prefill_once(model):
                outputs.append(model.generate(input_ids=ids, attention_mask=mask, generation_config=generation))
        else:
            outputs.append(model.generate(input_ids=ids, attention_mask=mask, generation_config=generation))
    plain, shared = outputs
    assert reached["prefilled_cache"] == before + 1  # the shared history was prefilled once
    assert torch.equal(shared.sequences, plain.sequences)
    for got, want in zip(shared.logits, plain.logits, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
