"""Dropping finished rows from the decode batch (train/levers/compact_decoding.py) samples what `generate` samples.

Each row's next token depends only on its own scores; with a sampler that is a fixed function of a row's
distribution (inverse CDF at a constant point) both loops must then pick the same tokens row by row, which proves
they feed the sampler the same distributions although their batches differ in size. With torch's own sampler and
no row finishing early, the random draws are the same too.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from pipeline.train.levers.compact_decoding import compact_sample, drop_finished_rows
from pipeline.train.levers.prefill_once import prefill_once
from pipeline.train.trl_surface import torch_multinomial
from tests.helpers.tiny_models import repeated_prompts, tiny_lora_model


def sharp_model() -> torch.nn.Module:
    """The tiny model with its output scaled up: peaked distributions that depend on the whole context, so a row
    continued from another row's cache picks other tokens."""
    model = tiny_lora_model().eval()
    with torch.no_grad():
        model.get_base_model().lm_head.weight.mul_(40)
    return model


def distinct_prompts(lengths: tuple[int, ...] = (8, 3, 6, 4, 7, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    """Six different prompts of 3 to 8 tokens, left-padded (all 8: no padding, and generate drops the mask)."""
    torch.manual_seed(2)
    ids, mask = torch.zeros(6, 8, dtype=torch.long), torch.zeros(6, 8, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 8 - length:], mask[row, 8 - length:] = torch.randint(3, 128, (length,)), 1
    return ids, mask


def at_fixed_point(probs: torch.Tensor, num_samples: int, *args, **kwargs) -> torch.Tensor:
    """A deterministic 'sampler': the token where the row's cumulative distribution passes 0.37."""
    cumulative = probs.cumsum(-1)
    return torch.searchsorted(cumulative, torch.full((probs.size(0), 1), 0.37) * cumulative[:, -1:], right=True)


def batch_sizes(model) -> tuple[list[int], object]:
    sizes: list[int] = []
    hook = model.get_base_model().model.embed_tokens.register_forward_hook(lambda m, i, o: sizes.append(o.size(0)))
    return sizes, hook


def early_eos(model, ids, mask) -> int:
    """A token that the deterministic sampler emits early in some rows but not in all: rows then end apart."""
    with torch_multinomial(at_fixed_point):
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config(eos=None, new=12))
    completions = out[:, ids.size(1):]
    for token in completions[:, :4].flatten().tolist():
        ending = [(row == token).nonzero()[0].item() for row in completions if (row == token).any()]
        if 0 < len(ending) < len(completions) or len(set(ending)) > 1:
            return token
    pytest.skip("the tiny model never emits a token that ends rows apart")


def config(eos: int | None, new: int = 12, **sampling) -> GenerationConfig:
    sampling = sampling or {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.3}
    return GenerationConfig(max_new_tokens=new, top_k=0, pad_token_id=0, eos_token_id=eos, **sampling)


def generate(model, ids, mask, generation_config, *, compact: bool, prefill: bool = False):
    with torch_multinomial(at_fixed_point):
        if prefill:
            with prefill_once(model):
                return generate(model, ids, mask, generation_config, compact=compact)
        if compact:
            with drop_finished_rows(model):
                return model.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config)
        return model.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config)


@pytest.mark.parametrize("layout", ["padded", "unpadded", "prefill-once"])
def test_rows_that_finish_leave_the_batch_and_every_row_samples_from_the_same_distribution(layout) -> None:
    model = sharp_model()
    prefill = layout == "prefill-once"
    ids, mask = {"padded": distinct_prompts, "unpadded": lambda: distinct_prompts((8,) * 6),
                 "prefill-once": repeated_prompts}[layout]()
    eos = early_eos(model, ids, mask)
    want = generate(model, ids, mask, config(eos), compact=False)
    sizes, hook = batch_sizes(model)
    got = generate(model, ids, mask, config(eos), compact=True, prefill=prefill)
    hook.remove()
    assert torch.equal(got, want)
    # the batch shrank as rows ended (prefill-once forwards one row per distinct prompt first)
    decode = sizes[1:] if not prefill else sizes[2:]
    assert decode == sorted(decode, reverse=True) and decode[-1] < len(ids), sizes
    assert "generate" not in model.__dict__


def test_greedy_decoding_with_rows_ending_apart_is_generates() -> None:
    model = tiny_lora_model().eval()
    ids, mask = repeated_prompts()
    greedy = config(None, do_sample=False)
    eos = model.generate(input_ids=ids, attention_mask=mask, generation_config=greedy)[0, ids.size(1) + 1].item()
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=config(eos, do_sample=False))
    with drop_finished_rows(model):
        got = model.generate(input_ids=ids, attention_mask=mask, generation_config=config(eos, do_sample=False))
    assert torch.equal(got, want)
    assert (got[:, -1] == 0).any()  # some row ended early and was padded, as generate pads it


def test_while_no_row_has_finished_the_random_draws_are_generates_own() -> None:
    model = tiny_lora_model().eval()
    ids, mask = repeated_prompts()
    plain = config(None, do_sample=True, temperature=1.0, top_p=1.0)
    torch.manual_seed(5)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=plain)
    torch.manual_seed(5)
    with drop_finished_rows(model):
        got = model.generate(input_ids=ids, attention_mask=mask, generation_config=plain)
    assert torch.equal(got, want)


class ReadsOtherRows(LogitsProcessor):
    """Not per-row: each row's scores depend on the batch, so rows cannot leave it."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores + scores.mean(0, keepdim=True)


def test_a_processor_not_known_to_be_per_row_keeps_generates_own_loop(caplog) -> None:
    model = tiny_lora_model().eval()
    ids, mask = repeated_prompts()
    eos = early_eos(model, ids, mask)
    extra = LogitsProcessorList([ReadsOtherRows()])
    with torch_multinomial(at_fixed_point):
        want = model.generate(input_ids=ids, attention_mask=mask, generation_config=config(eos), logits_processor=extra)
        with caplog.at_level(logging.INFO), drop_finished_rows(model):
            got = model.generate(input_ids=ids, attention_mask=mask, generation_config=config(eos),
                                 logits_processor=extra)
    assert torch.equal(got, want)
    assert "ReadsOtherRows is not known to be per-row" in caplog.text


def test_a_caller_with_its_own_loop_keeps_it() -> None:
    model = tiny_lora_model().eval()
    ids, mask = repeated_prompts()
    seen = []

    def own_loop(model, input_ids, **kwargs):
        seen.append(input_ids.shape)
        return compact_sample(model, input_ids, **kwargs)

    with drop_finished_rows(model):
        model.generate(input_ids=ids, attention_mask=mask, generation_config=config(None, new=2),
                       custom_generate=own_loop)
    assert seen == [ids.shape]


def test_held_out_evaluation_decodes_with_the_compacting_loop(monkeypatch) -> None:
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    from pipeline.train.levers import compact_decoding
    from pipeline.train.observe import heldout
    from pipeline.train.trl_surface import Counter
    from tests.helpers.tiny_models import TOKENIZER, tiny_config

    monkeypatch.setattr(compact_decoding, "reached", Counter())
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(tiny_config(len(tokenizer), "sdpa"))
    prompts = [[{"role": "user", "content": text}] for text in ("What is 12 + 30?", "1+1=", "Name a colour")]
    texts = heldout.generate_greedy(model, tokenizer, prompts, max_new_tokens=6)
    assert compact_decoding.reached["compact_sample"] == 1
    monkeypatch.setattr(heldout, "compact_sample", None)  # generate's own loop
    assert heldout.generate_greedy(model, tokenizer, prompts, max_new_tokens=6) == texts
