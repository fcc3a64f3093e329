"""GGUF export: tiny llama / qwen2 / qwen3 models written with the gguf package's writer, read back with its reader
(tensor names and shapes) and -- where transformers' GGUF loader supports it -- loaded back with identical logits.
A finished run's export with format=gguf through the CLI: tests/test_eval_training.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gguf import GGUFReader
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from pipeline.tools.gguf_export import write_gguf

TEXTS = ["What is 12 + 30? 42.", "The answer is 7.", "<|im_start|>user\nhello<|im_end|>"] * 20


def small_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of ~300 tokens: the GGUF token list of the real 49k vocabulary takes the reader (and
    transformers' loader) ~15 s per parse on 2 cores; the code path is the same."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>")


def tiny(tmp: Path, model_type: str, tied: bool) -> tuple[Path, torch.nn.Module, PreTrainedTokenizerFast]:
    tokenizer = small_tokenizer()
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  max_position_embeddings=256, tie_word_embeddings=tied,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return tmp, model, tokenizer


def read_back(path: Path) -> dict[str, tuple[int, ...]]:
    # ggml lists dimensions fastest-first: reversed, they are torch's shapes
    return {t.name: tuple(int(d) for d in reversed(t.shape)) for t in GGUFReader(str(path)).tensors}


@pytest.mark.parametrize(("model_type", "tied"), [("llama", False), ("qwen2", True)])
def test_gguf_loads_back_in_transformers_with_identical_logits(tmp_path: Path, model_type: str, tied: bool) -> None:
    folder, model, tokenizer = tiny(tmp_path, model_type, tied)
    path = write_gguf(folder)
    shapes = read_back(path)
    assert shapes["token_embd.weight"] == (len(tokenizer), 64) and shapes["blk.1.attn_k.weight"] == (32, 64)
    assert ("output.weight" in shapes) is not tied
    assert len(shapes) == len(model.state_dict()) - tied
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=path.name, dtype=torch.float32)
    ids = torch.tensor([tokenizer("What is 12 + 30? The answer is 42.")["input_ids"]])
    with torch.no_grad():
        expected, got = model(ids).logits, loaded(ids).logits
    # F32 tensors, llama's Q/K permuted and un-permuted: the same numbers (tolerance for summation order only)
    assert torch.allclose(expected, got, atol=1e-5), (expected - got).abs().max()
    gguf_tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=path.name)
    text = "What is 12 + 30?<|im_end|>"
    assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
