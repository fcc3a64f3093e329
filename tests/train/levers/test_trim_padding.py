"""Trimming padding keeps every real token and gives TRL's loss and gradients."""

from __future__ import annotations

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer, Qwen3ForCausalLM
from trl import GRPOConfig, GRPOTrainer

from pipeline.train.levers.grpo_trainer import LeveredGRPOTrainer
from pipeline.train.levers.trim_padding import trim_padding
from tests.helpers.tiny_models import TOKENIZER, tiny_config


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
    config = tiny_config(len(tokenizer))
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
