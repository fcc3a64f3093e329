"""A rough per-GPU memory estimate for the dry run: weights, trainable-state, activations, generation cache.

Per device, for P parameters of which T train, N ranks, ZeRO stage z (bytes):
  weights      P x (4 fp32 | 2 bf16 | 1 int8 | ~0.5 nf4, embeddings stay 16-bit)     / N when z = 3
  gradients    T x (4 for LoRA adapters, which peft keeps in fp32 | the weight dtype)  / N when z >= 2
  optimizer    T x (8: Adam m, v | 12 under DeepSpeed mixed precision: + fp32 master) / N when z >= 1
  activations  micro_batch x seq x hidden x layers x 34 bytes (Korthikanti et al.; 2 x h x s x b per layer
               plus one layer's 34 with gradient checkpointing), x2 in fp32, + fp32 logits (micro x seq x vocab)
  generation   stages that sample (GRPO): the KV cache of the rank's share of completions (TRL generates them at once)
  runtime      ~1 GiB CUDA context and allocator slack
Offload moves optimizer states (and for ZeRO-3 weights) to CPU RAM. The shapes come from the model config (local
dir, the HF cache, a table of the presets' public configs, or `model.arch`), never from a download.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config.derived import fsdp2
from pipeline.config.enums import Device, ModelSource, PeftMethod, Precision, QuantMethod
from pipeline.config.plan import RunPlan
from pipeline.config.schema import ModelConfig

GIB = 2**30
# Public configs of the shipped model presets, so a dry run knows their shapes without the hub.
KNOWN_ARCH = {
    "qwen2.5-0.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         tie_word_embeddings=True),
    "qwen3-1.7b": dict(model_type="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                       tie_word_embeddings=True),
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         tie_word_embeddings=True),
}


@dataclass
class Shapes:
    params: int
    embedding: int
    hidden: int
    layers: int
    vocab: int
    kv_dim: int
    # (in_features, out_features, module name) of every nn.Linear but the output head: LoRA's targets
    linears: list[tuple[int, int, str]] = field(default_factory=list)
    source: str = "config"


@dataclass
class Estimate:
    shapes: Shapes
    trainable: int
    parts: dict[str, float]
    limit_gib: float | None

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def over(self) -> bool:
        return self.limit_gib is not None and self.total > self.limit_gib

    def report(self, plan: RunPlan) -> str:
        s, cfg = self.shapes, plan.cfg
        lines = [f"per-GPU memory estimate (rough) for model={cfg.model.name}: {s.params / 1e9:.3f}B params "
                 f"(shapes from {s.source}), {self.trainable / 1e6:.2f}M trainable ({cfg.peft.method.value}), "
                 f"quant={cfg.quant.method.value}, zero={cfg.zero.name}, world size "
                 f"{plan.world_size}, micro_batch={plan.micro_batch}"]
        lines += [f"  {name:<12} {gib:8.2f} GiB" for name, gib in self.parts.items()]
        limit = f" of {self.limit_gib:g} GiB (hw={cfg.hw.name})" if self.limit_gib else ""
        lines.append(f"  {'total':<12} {self.total:8.2f} GiB{limit}")
        if self.over:
            lines.append(f"WARNING: the estimate ({self.total:.1f} GiB) exceeds hw.memory_gb={self.limit_gib:g}: "
                         "lower hw.micro_batch, turn on hw.gradient_checkpointing, use quant=nf4, or a higher "
                         "zero stage / more processes.")
        return "\n".join(lines)


def memory_report(plan: RunPlan) -> str:
    """The estimate as the dry run prints it; a chain gets one per step."""
    if plan.steps:
        return "\n".join(f"{step.run_dir.name}: {memory_report(step)}" for step in plan.steps)
    try:
        return estimate(plan).report(plan)
    except ValueError as err:
        return f"per-GPU memory estimate unavailable: {err}"


def estimate(plan: RunPlan) -> Estimate:
    cfg = plan.cfg
    shapes = model_shapes(cfg.model)
    hw, zero, world = cfg.hw, cfg.zero, plan.world_size
    half = hw.precision != Precision.fp32
    lora = cfg.peft.method == PeftMethod.lora
    trainable = lora_params(shapes, cfg.peft.r, cfg.peft.target_modules) if lora else shapes.params
    # fp16 profiles, and bf16 on CPU, load fp32 weights and train with autocast (pipeline.train.model.build)
    dtype_bytes = 2 if hw.precision == Precision.bf16 and hw.device == Device.cuda else 4
    weights = _weight_bytes(shapes, cfg.quant.method, dtype_bytes)
    grads = trainable * (4 if lora else dtype_bytes)
    optim = trainable * (12 if zero.stage and half else 2 * (4 if lora else dtype_bytes))
    if zero.stage >= 1:
        optim = 0 if zero.offload_optimizer else optim / world
    if zero.stage >= 2:
        grads /= world
    if zero.stage >= 3:
        weights = 0 if zero.offload_params else weights / world
    parts = {"weights": weights, "gradients": grads, "optimizer": optim,
             "activations": _activation_bytes(plan, shapes, half)}
    if fsdp2(cfg):
        parts.update(_fsdp2_parts(shapes, parts, world, lora, dtype_bytes))
    if plan.stage.generates:
        # TRL generates a rank's whole share of the batch at once (steps_per_generation = accumulation): K and V
        # per layer for every token of those completions, in the weight dtype
        per_rank = cfg.stage.batch_size // world
        parts["generation"] = 2 * shapes.layers * shapes.kv_dim * plan.sequence_tokens * per_rank * dtype_bytes
    if hw.device == Device.cuda:
        parts["runtime"] = GIB
    return Estimate(shapes, trainable, {k: v / GIB for k, v in parts.items()}, hw.memory_gb)


def _fsdp2_parts(s: Shapes, parts: dict[str, float], world: int, lora: bool, dtype_bytes: int) -> dict[str, float]:
    """FSDP2 shards what it wraps: the weights, and for full fine-tuning their gradients and optimizer states (a
    LoRA adapter, attached after sharding, stays whole on every rank); each rank also holds two decoder layers whole
    while it computes one and prefetches the next."""
    sharded = {"weights": parts["weights"] / world}
    if not lora:
        sharded |= {"gradients": parts["gradients"] / world, "optimizer": parts["optimizer"] / world}
    layer = (s.params - s.embedding) / max(s.layers, 1)
    return sharded | {"fsdp2 gather": 2 * layer * dtype_bytes}


def _weight_bytes(s: Shapes, quant: QuantMethod, dtype_bytes: int) -> float:
    if quant == QuantMethod.none:
        return s.params * dtype_bytes
    # bitsandbytes quantises the linear layers only; embeddings and norms stay in 16 bits
    per_param = 1.0 if quant == QuantMethod.int8 else 0.5 + 32 / 64 / 8  # nf4: 4 bits + a scale per 64 weights
    return (s.params - s.embedding) * per_param + s.embedding * 2


def _activation_bytes(plan: RunPlan, s: Shapes, half: bool) -> float:
    # sequences_per_row: DPO's chosen and rejected go through the model in one concatenated batch
    micro, seq = plan.micro_batch * plan.stage.sequences_per_row, plan.sequence_tokens
    per_layer = micro * seq * s.hidden * 34 * (1 if half else 2)
    if plan.cfg.hw.gradient_checkpointing:
        body = micro * seq * s.hidden * 2 * s.layers + per_layer
    else:
        body = per_layer * s.layers
    return body + micro * seq * s.vocab * 4


def lora_params(s: Shapes, r: int, targets: object) -> int:
    names = None if targets == "all-linear" else {str(t) for t in targets}  # type: ignore[union-attr]
    return sum(r * (i + o) for i, o, name in s.linears if names is None or name.split(".")[-1] in names)


def model_shapes(model: ModelConfig) -> Shapes:
    """Shapes from the first source that needs no download and no conversion."""
    arch, source = _find_arch(model)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = dict(arch)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config)
    linears = [(m.in_features, m.out_features, n) for n, m in net.named_modules()
               if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]
    embedding = net.get_input_embeddings().weight.numel()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_dim = getattr(config, "num_key_value_heads", heads) * head_dim
    return Shapes(sum(p.numel() for p in net.parameters()), embedding, config.hidden_size,
                  config.num_hidden_layers, config.vocab_size, kv_dim, linears, source)


def _find_arch(model: ModelConfig) -> tuple[dict, str]:
    if model.source == ModelSource.random:
        return dict(model.arch), "model.arch"
    local = _local_config(model)
    if local is not None:
        return local
    key = re.sub(r"[_/]", "-", f"{model.name} {model.path}".lower())
    for name, arch in KNOWN_ARCH.items():
        if name in key:
            return dict(arch), f"the {name} preset table"
    raise ValueError(
        f"model={model.name}: no config.json found locally for {model.path} and no preset shape is known. "
        "Fix: download the model once (it lands in the HF cache), or point model.path at a local directory."
    )


def _local_config(model: ModelConfig) -> tuple[dict, str] | None:
    if model.source != ModelSource.pretrained:
        return None
    candidate = Path(model.path) / "config.json"
    if not candidate.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model.path, "config.json", revision=model.revision)
        except Exception:  # noqa: BLE001 - an unusual id is simply "not cached"
            cached = None
        if not isinstance(cached, str):
            return None
        candidate = Path(cached)
    data = json.loads(candidate.read_text())
    keep = {k: v for k, v in data.items() if not k.startswith("_") and k not in ("architectures", "auto_map")}
    return keep, str(candidate)
