"""Write an exported model folder (safetensors + tokenizer) as one GGUF file with the `gguf` package's writer.

    python -m pipeline.tools.export outputs/grpo/RUN format=gguf    # -> <run>/export/model.gguf beside the safetensors

What it covers: the llama, qwen2 and qwen3 architectures with a BPE (GPT-2 style) tokenizer, every tensor in F32
(no quantization: llama.cpp's `llama-quantize` makes Q4/Q8 files from this one). Names follow gguf's own
TensorNameMap. llama's Q/K weights are permuted to GGUF's rotary layout, as llama.cpp's converter does (transformers
permutes them back when loading); qwen2/qwen3 use the layout as is. Checked by tests/tools/test_gguf.py: llama
and qwen2 load back in transformers with identical logits. Limit: transformers' GGUF loader reads no head_dim
for qwen3 and assumes Qwen3Config's 128 (the real Qwen3 models' value), so a qwen3 model with another head_dim --
the tiny test model has 16 -- is written correctly (llama.cpp reads attention.key_length) but does not load back
in transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.config.user_errors import UserError

ARCHS = {"llama": "LLAMA", "qwen2": "QWEN2", "qwen3": "QWEN3"}
GGUF_NAME = "model.gguf"


class GGUFExportError(UserError, RuntimeError):
    """The model cannot be written as GGUF by this writer; the message says why."""


def write_gguf(model_dir: Path, out: Path | None = None) -> Path:
    """model_dir (a transformers folder) -> out (default model_dir/model.gguf); returns the file."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    config = model.config
    if config.model_type not in ARCHS:
        raise GGUFExportError(f"model_type={config.model_type}: the GGUF writer covers {', '.join(ARCHS)}.")
    arch = getattr(gguf.MODEL_ARCH, ARCHS[config.model_type])
    out = out or model_dir / GGUF_NAME
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    _hparams(writer, config)
    _tokenizer(writer, tokenizer, model_dir, config.vocab_size)
    names = gguf.TensorNameMap(arch, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # GGUF: no output.weight means the output reuses token_embd (transformers ties them again)
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise GGUFExportError(f"no GGUF name for tensor {name} ({config.model_type})")
        writer.add_tensor(gguf_name, _layout(name, tensor, config).numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _hparams(writer, config) -> None:
    writer.add_name(config.model_type)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(0)  # ALL_F32


def _tokenizer(writer, tokenizer, model_dir: Path, vocab_size: int) -> None:
    import gguf

    spec = json.loads((model_dir / "tokenizer.json").read_text())
    if spec["model"]["type"] != "BPE":
        raise GGUFExportError(f"tokenizer type {spec['model']['type']}: the GGUF writer covers BPE tokenizers.")
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    special = set(tokenizer.all_special_ids)
    # Rows past the tokenizer's own vocabulary (padding of the embedding matrix) get placeholder tokens.
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i not in by_id
             else gguf.TokenType.NORMAL for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _layout(name: str, tensor: torch.Tensor, config) -> torch.Tensor:
    """llama's Q/K rows in GGUF's rotary order (llama.cpp's `permute`); everything else as is."""
    if config.model_type != "llama" or not name.endswith(("q_proj.weight", "k_proj.weight")):
        return tensor
    heads = config.num_attention_heads if name.endswith("q_proj.weight") else config.num_key_value_heads
    return tensor.reshape(heads, 2, tensor.shape[0] // heads // 2, *tensor.shape[1:]).swapaxes(1, 2).reshape(
        tensor.shape)
