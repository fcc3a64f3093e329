"""The tiny model built in code (Qwen3, hidden 32, 2 layers), with or without a LoRA adapter, a tiny Llama reward
model saved to a folder, and the real SmolLM2 tokenizer shipped in pipeline/assets; no hub."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen3Config

from tests.helpers.runs import REPO

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"


def tiny_config(vocab: int, attn: str | None = None) -> Qwen3Config:
    """The tiny Qwen3; attn sets the attention implementation (transformers picks one when None)."""
    config = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256)
    if attn is not None:
        config._attn_implementation = attn
    return config


def tiny_lora_model(vocab: int = 128) -> torch.nn.Module:
    """The tiny Qwen3 (seed 0) under a LoRA adapter on every linear layer, in training mode."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(Qwen3ForCausalLM(tiny_config(vocab)),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero; a trained-looking adapter makes the merge visible
                param.normal_(std=0.05)
    return model


def tiny_rm(path: Path, num_labels: int = 1) -> Path:
    """A tiny Llama sequence classifier (seed 0) with the SmolLM2 tokenizer, saved in path: a reward model."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=num_labels,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def repeated_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts (7 and 4 tokens, left-padded) x 3 rows each, interleaved as after a shuffle."""
    torch.manual_seed(1)
    long, short = torch.randint(3, 128, (7,)), torch.randint(3, 128, (4,))
    ids, mask = torch.zeros(6, 7, dtype=torch.long), torch.zeros(6, 7, dtype=torch.long)
    for row in range(6):
        prompt = long if row % 2 == 0 else short
        ids[row, 7 - len(prompt):], mask[row, 7 - len(prompt):] = prompt, 1
    return ids, mask


def tiny_teacher(path: Path, vocab: int | None = None, extra_token: str | None = None) -> Path:
    """The tiny Qwen3 causal LM (seed 1; hidden 32, model=tiny's is 64) with the SmolLM2 tokenizer, saved in path: a
    teacher for stage=distill. `vocab`: its embedding rows (default: the tokenizer's); `extra_token`: one token added
    to its tokenizer, so its vocabulary differs from the student's."""
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    if extra_token is not None:
        tokenizer.add_tokens([extra_token])
    torch.manual_seed(1)
    Qwen3ForCausalLM(tiny_config(vocab or 49152)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
