"""Generation's Linear layers on weights oneDNN packed once per call (`hw.packed_linears`, CPU, fp32).

`F.linear` on CPU hands every call to a GEMM that first re-packs the weight into its blocked layout; at decoding's
few rows per call that packing costs about as much as the product (SmolLM2-135M, 2 cores, AMD EPYC, fp32: its
49152 x 576 LM head on 32 rows 35 ms by F.linear, 12 ms on a packed copy; a 1536 x 576 MLP weight 600 -> 319 us).
Here, for one generation call, each plain fp32 `nn.Linear` runs `torch.ops.mkldnn._linear_pointwise` on a copy of
its weight packed once by `torch.ops.mkldnn._reorder_linear_weight` (the pair torch's inductor uses for frozen CPU
linears). The same fp32 arithmetic summed in another order: outputs within ~1e-5 relative of F.linear, the same
tokens in the tests' generations (tests/train/levers/test_packed_linears.py).

Entered inside merged_lora (it packs the merged copies) and full_precision (the fp32 originals). Skipped, with the
layers left as they are: under autograd (the op has no backward), under autocast (it would bypass autocast's casts:
bf16 sampling), for weights that are not plain fp32 CPU tensors (quantized, bf16-held, ZeRO-3 / FSDP2 shards), and
where this torch build lacks the ops. The packed copies live only during the call: one more copy of the Linear
weights while generating (SmolLM2: 0.5 GB).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch

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


def _packed_forward(module: torch.nn.Linear):
    packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), _ROWS_HINT)
    bias = None if module.bias is None else module.bias.detach()
    plain = type(module).forward.__get__(module)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
            return plain(x)
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    return forward


@contextmanager
def packed_linears(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """While inside, the model's plain fp32 Linear layers compute on packed copies of their current weights (a
    generation call under no_grad); their own forward is back on exit."""
    # grad may still be on here (TRL turns it off inside its generation call): each forward checks again
    usable = enabled and packing_available() and not torch.is_autocast_enabled("cpu")
    modules = [m for m in model.modules() if packable(m)] if usable else []
    for module in modules:
        module.forward = _packed_forward(module)
    if modules:
        reached["packed linears"] += 1
    try:
        yield
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)
