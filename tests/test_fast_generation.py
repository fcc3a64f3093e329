"""GRPO speed-ups (pipeline/train/levers/merged_lora.py, fast_sampling.py, trim_padding.py) must not change what is
trained: merged-LoRA generation restores the weights exactly, inverse-CDF sampling draws the same distribution,
and trimmed micro-batches give TRL's own loss."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM
from trl import GRPOConfig, GRPOTrainer

from pipeline.train.levers.fast_sampling import inverse_cdf_sampling
from pipeline.train.levers.grpo_trainer import LeveredGRPOTrainer
from pipeline.train.levers.merged_lora import merged_lora
from pipeline.train.levers.trim_padding import trim_padding
from tests.conftest import REPO

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"


def tiny_lora_model(vocab: int = 128) -> torch.nn.Module:
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256)
    model = get_peft_model(Qwen3ForCausalLM(config), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero; a trained-looking adapter makes the merge visible
                param.normal_(std=0.05)
    return model


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


def test_inverse_cdf_sampling_draws_the_same_distribution() -> None:
    probs = torch.tensor([[0.0, 0.5, 0.2, 0.0, 0.3], [0.9, 0.0, 0.0, 0.1, 0.0]])
    torch.manual_seed(0)
    with inverse_cdf_sampling():
        draws = torch.cat([torch.multinomial(probs, num_samples=1) for _ in range(20000)], dim=1)
    for row in range(2):
        freq = torch.bincount(draws[row], minlength=5).float() / draws.size(1)
        torch.testing.assert_close(freq, probs[row], atol=0.015, rtol=0)
        assert freq[probs[row] == 0].sum() == 0  # zero-probability tokens are never drawn


def test_inverse_cdf_sampling_matches_multinomial_over_a_real_vocabulary() -> None:
    # float32 cumulative sums over 49k entries: the head and the tail must both keep their mass
    torch.manual_seed(0)
    probs = (torch.randn(49152) * 3).softmax(-1)
    rows = probs.expand(2000, -1).contiguous()
    with inverse_cdf_sampling():
        draws = torch.cat([torch.multinomial(rows, num_samples=1).flatten() for _ in range(10)])
    freq = torch.bincount(draws, minlength=probs.numel()).float() / draws.numel()
    order = probs.argsort(descending=True)
    head, tail = order[:10], order[1000:]
    sigma = (probs[head] * (1 - probs[head]) / draws.numel()).sqrt()
    assert ((freq[head] - probs[head]).abs() < 5 * sigma).all()
    tail_mass = probs[tail].sum()
    tail_sigma = (tail_mass * (1 - tail_mass) / draws.numel()).sqrt()
    assert abs(freq[tail].sum() - tail_mass) < 5 * tail_sigma


def test_inverse_cdf_sampling_is_scoped() -> None:
    original = torch.multinomial
    with inverse_cdf_sampling():
        assert torch.multinomial is not original
        # other call forms go to torch's own sampler
        assert torch.multinomial(torch.tensor([[0.5, 0.5]]), num_samples=2).shape == (1, 2)
    assert torch.multinomial is original


def padded_batch() -> dict:
    # prompts left-padded to 5 (widest has 4 real tokens), completions right-padded to 6 (longest has 3)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    completion_mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    torch.manual_seed(1)
    return {
        "prompt_ids": torch.randint(1, 100, (2, 5)) * prompt_mask,
        "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(1, 100, (2, 6)) * completion_mask,
        "completion_mask": completion_mask,
        "old_per_token_logps": torch.randn(2, 6),
        "advantages": torch.tensor([0.7, -0.7]),
        "num_items_in_batch": torch.tensor(5),
    }


def test_trim_padding_keeps_every_real_token() -> None:
    batch = padded_batch()
    trimmed = trim_padding(batch)
    assert trimmed["prompt_ids"].shape == (2, 4) and trimmed["prompt_mask"].shape == (2, 4)
    assert trimmed["completion_ids"].shape == (2, 3) and trimmed["old_per_token_logps"].shape == (2, 3)
    assert torch.equal(trimmed["prompt_ids"], batch["prompt_ids"][:, 1:])
    assert torch.equal(trimmed["old_per_token_logps"], batch["old_per_token_logps"][:, :3])
    assert trimmed["prompt_mask"].sum() == batch["prompt_mask"].sum()
    assert trimmed["completion_mask"].sum() == batch["completion_mask"].sum()
    assert trimmed["advantages"] is batch["advantages"]
    # image inputs tie positions to pixels: such batches are left as they are
    assert trim_padding({**batch, "pixel_values": torch.zeros(1)}) is not batch
    assert trim_padding({**batch, "pixel_values": torch.zeros(1)})["completion_ids"].shape == (2, 6)


def test_trimmed_micro_batch_gives_trls_loss_and_gradients(tmp_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256)
    torch.manual_seed(0)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=6, report_to="none", max_steps=1)
    trainer = LeveredGRPOTrainer(
        model=Qwen3ForCausalLM(config), args=args, processing_class=tokenizer,
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        train_dataset=Dataset.from_list([{"prompt": "1+1="}] * 4), peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    model = trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() around each step
    losses, grads = [], []
    for compute in (lambda inputs: GRPOTrainer.compute_loss(trainer, model, inputs), lambda inputs:
                    trainer.compute_loss(model, inputs)):
        model.zero_grad()
        loss = compute(padded_batch())
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert losses[0] != 0
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-5)
    for trimmed, full in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(trimmed, full, atol=1e-6, rtol=1e-4)
