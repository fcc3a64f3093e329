"""Generation's Linear layers on weights oneDNN packed once per call (`hw.packed_linears`, CPU, fp32).

`F.linear` on CPU hands every call to a GEMM that first re-packs the weight into its blocked layout; at decoding's
few rows per call that packing costs about as much as the product (SmolLM2-135M, 2 cores, AMD EPYC, fp32: its
49152 x 576 LM head on 32 rows 35 ms by F.linear, 12 ms on a packed copy; a 1536 x 576 MLP weight 600 -> 319 us).
Here, for one generation call, each plain fp32 `nn.Linear` runs `torch.ops.mkldnn._linear_pointwise` on a copy of
its weight packed once by `torch.ops.mkldnn._reorder_linear_weight` (the pair torch's inductor uses for frozen CPU
linears). The same fp32 arithmetic summed in another order: outputs within ~1e-5 relative of F.linear, the same
tokens in the tests' generations (tests/train/levers/test_packed_linears.py).

Under bf16 autocast too: accelerate wraps the prepared model's forward in autocast, so in a bf16 run each call of
the model itself during generation on the fp32 originals (prefill_once's forward of the shared opening) cast every
weight to bf16 again, slower than the packed fp32 product here (32 rows: the LM head 38.9 ms under autocast, 11.6
ms packed; 1536 x 576 0.50 -> 0.38 ms), while transformers' own steps ran in fp32; inside this context those layers
compute in fp32 throughout (a bf16 input from an autocast op is cast up). The held-out evaluation always enters it
so; GRPO's sampling with `leave_autocast`: a call under autocast keeps its bf16 product, so sampling has the numerics
it had unpacked, the ones a bf16 run's learning was measured on (docs/benchmarks.md). Entered inside merged_lora (it
packs the merged copies) and full_precision. Left as they are: every layer under autograd (the op has no
backward), a LoRA adapter's own small layers, weights that are not plain fp32 CPU tensors (quantized, bf16-held,
ZeRO-3 / FSDP2 shards), and all of them where this torch build lacks the ops. The packed copies live only during the
call: one more copy of the Linear weights while generating (SmolLM2: 0.5 GB), not made where it would not fit
(levers/host_memory.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch

from pipeline.train.levers.host_memory import copies_fit
from pipeline.train.trl_surface import reached

log = logging.getLogger(__name__)

# the row count the packing is tuned for: decoding's batch (any other count computes the same)
_ROWS_HINT = 32


@cache
def packing_available() -> bool:
    mkldnn = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(mkldnn, name) for name in ("_reorder_linear_weight", "_linear_pointwise"))


def packable(module: torch.nn.Module) -> bool:
    """Exactly nn.Linear (not bitsandbytes' subclass) on a whole fp32 CPU weight (not a ZeRO-3 / FSDP2 shard)."""
    weight = getattr(module, "weight", None)
    return (type(module) is torch.nn.Linear and type(weight) is torch.nn.Parameter and weight.device.type == "cpu"
            and weight.dtype == torch.float32 and weight.layout == torch.strided and weight.numel() > 0
            and not hasattr(weight, "ds_id"))


def _packed_forward(module: torch.nn.Linear, leave_autocast: bool):
    packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach().contiguous(), _ROWS_HINT)
    bias = None if module.bias is None else module.bias.detach()
    plain = type(module).forward.__get__(module)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or (leave_autocast and torch.is_autocast_enabled("cpu")):
            return plain(x)
        if x.dtype != torch.float32:
            if not (x.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu")):
                return plain(x)
            x = x.float()  # an autocast op's bf16 output, as the fp32 layer it feeds would have taken it
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    return forward


def _adapter_layers(model: torch.nn.Module) -> set[int]:
    """A LoRA adapter's own small Linear layers (lora_A, lora_B): idle while it is merged for generation, and too
    small for packing to pay (~0.25 ms a layer to pack, SmolLM2's 420 of them 0.1 s a call)."""
    from peft.tuners.lora import LoraLayer

    return {id(m) for layer in model.modules() if isinstance(layer, LoraLayer)
            for adapters in (layer.lora_A, layer.lora_B) for m in adapters.values()}


@contextmanager
def packed_linears(model: torch.nn.Module, enabled: bool = True, leave_autocast: bool = False) -> Iterator[None]:
    """While inside, the model's plain fp32 Linear layers compute on packed copies of their current weights (a
    generation call under no_grad); their own forward is back on exit. With `leave_autocast`, a call under CPU
    autocast keeps autocast's bf16 product, so packing changes only the fp32 products' summation order."""
    # grad may still be on here (TRL turns it off inside its generation call): each forward checks again
    usable = enabled and packing_available()
    adapters = _adapter_layers(model) if usable else set()
    modules = [m for m in model.modules() if usable and packable(m) and id(m) not in adapters]
    if modules and not copies_fit(sum(m.weight.nbytes for m in modules), "hw.packed_linears"):
        modules = []
    for module in modules:
        module.forward = _packed_forward(module, leave_autocast)
    if modules:
        if not reached["packed linears"]:
            log.info("generation: %d fp32 Linear layers on weight copies oneDNN packed once per call "
                     "(hw.packed_linears; levers/packed_linears.py)", len(modules))
        reached["packed linears"] += 1
    try:
        yield
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)
