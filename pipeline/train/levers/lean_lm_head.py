"""TRL's fused LM head on CPU at a fraction of its cost, with the same numbers (`hw.lean_lm_head`).

Every TRL trainer we wrap (SFT, DPO, GRPO, KTO) scores tokens through `add_fused_lm_head`: per-token log-probs and
entropy of `hidden @ lm_head.T`, computed in [tokens x 32768] tiles of the vocabulary without the full logits. On
a device without Triton two things make it slow, and both are fixed here for CPU tensors only:

- Every position is scored, the prompt's and the padding's included: TRL keeps the tile shapes fixed so that a
  compiling backend (Neuron) does not recompile per batch. Eager CPU has nothing to recompile, so CPU takes TRL's
  own compact branch (only the labelled positions are projected, then scattered back), by answering "yes" to the
  one question `_fused_forward` asks before choosing it.
- The torch stand-ins for the Triton tile kernels make ~10 passes over each tile, most into freshly allocated
  tensors of the tile's size (a page-faulted 40-80 MB each on CPU). The versions below work in place in the tile
  TRL hands over (it is a scratch buffer: TRL overwrites it with the next projection, or reads the gradient back
  from it): 4-5 passes, no large allocation. Same formulas, same float32 arithmetic up to summation order.

A bf16 tile (bf16 autocast on CPU) is folded in a reused fp32 copy, as TRL's stand-ins fold `tile.float()`.
Cases the in-place versions do not cover (a softcapped or fp16 tile, the rarely used `is_top1` and
`log_sum_sq_probs` outputs, an entropy gradient) go to TRL's own stand-ins unchanged.

Measured (SmolLM2's 576 x 49152 head, fp32, 2 cores; forward + backward of log-probs and entropy): 600 positions
2.0 s with TRL's stand-ins; 0.8 s in place; 0.4 s in place over the 330 that carry a label (bench/README).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import trl.kernels.chunked_logprob as chunked_logprob
import trl.trainer.utils as trl_utils

from pipeline.train.trl_surface import reached

_TRL_FORWARD_TILE = chunked_logprob._forward_tile
_TRL_BACKWARD_TILE = chunked_logprob._backward_tile
_TRL_USE_TRITON = trl_utils._use_triton


def _compact_on_cpu(device: torch.device) -> bool:
    # read by `_fused_forward` only to choose between scoring every position and only the labelled ones
    if device.type == "cpu":
        reached["_use_triton"] += 1
        return True
    return _TRL_USE_TRITON(device)


def _forward_tile(tile: torch.Tensor, tile_stride: int, targets: torch.Tensor, running_max: torch.Tensor,
                  sum_exp: torch.Tensor, x_sum_exp: torch.Tensor, sq_sum_exp: torch.Tensor, z_sum: torch.Tensor,
                  max_before_target: torch.Tensor, target_logit: torch.Tensor, vocab_start: int, n_cols: int,
                  logit_scale: float, softcap: float, inv_t: float, HAS_SOFTCAP: bool, HAS_ENTROPY: bool,  # noqa: N803
                  HAS_LOG_SUM_SQ_PROBS: bool, HAS_MEAN_LOGITS: bool, HAS_IS_TOP1: bool, BLOCK_SIZE: int,  # noqa: N803
                  ) -> None:
    """TRL's `_forward_tile` (online log-sum-exp, target logit, entropy and mean-logit sums), in place in `tile`."""
    if tile.dtype not in _FOLDED or HAS_SOFTCAP or HAS_IS_TOP1 or HAS_LOG_SUM_SQ_PROBS:
        return _TRL_FORWARD_TILE(tile, tile_stride, targets, running_max, sum_exp, x_sum_exp, sq_sum_exp, z_sum,
                                 max_before_target, target_logit, vocab_start, n_cols, logit_scale, softcap, inv_t,
                                 HAS_SOFTCAP, HAS_ENTROPY, HAS_LOG_SUM_SQ_PROBS, HAS_MEAN_LOGITS, HAS_IS_TOP1,
                                 BLOCK_SIZE)
    reached["_forward_tile"] += 1
    z = _fp32(tile)
    if logit_scale * inv_t != 1.0:
        z.mul_(logit_scale * inv_t)
    local = targets - vocab_start
    in_tile = (local >= 0) & (local < n_cols)
    target_z = z.gather(-1, local.clamp(0, n_cols - 1).unsqueeze(-1)).squeeze(-1)
    target_logit.copy_(torch.where(in_tile, target_z, target_logit))
    if HAS_MEAN_LOGITS:
        z_sum += z.sum(-1)
    new_max = torch.maximum(running_max, z.amax(-1))
    rescale = torch.exp(running_max - new_max)
    shifted = z.sub_(new_max.unsqueeze(-1))
    if HAS_ENTROPY:
        # sum(e * z) = sum(e * (z - max)) + max * sum(e), e = exp(z - max) taken a block of rows at a time into a
        # small reused buffer (the shifted logits are still needed for the product)
        e_sum, e_dot = torch.empty_like(new_max), torch.empty_like(new_max)
        buffer = _row_buffer(shifted)
        for start in range(0, len(shifted), len(buffer)):
            part = shifted[start : start + len(buffer)]
            e = torch.exp(part, out=buffer[: len(part)])
            e_sum[start : start + len(part)] = e.sum(-1)
            e_dot[start : start + len(part)] = e.mul_(part).sum(-1)
        x_sum_exp.mul_(rescale).add_(e_dot + new_max * e_sum)
    else:
        e_sum = shifted.exp_().sum(-1)
    sum_exp.mul_(rescale).add_(e_sum)
    running_max.copy_(new_max)
    return None


def _backward_tile(tile: torch.Tensor, tile_stride: int, targets: torch.Tensor, log_z: torch.Tensor,
                   entropy: torch.Tensor, grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor, vocab_start: int,
                   n_cols: int, logit_scale: float, softcap: float, inv_t: float, HAS_SOFTCAP: bool,  # noqa: N803
                   HAS_LOGPROB_GRAD: bool, HAS_ENTROPY_GRAD: bool, BLOCK_SIZE: int) -> None:  # noqa: N803
    """TRL's `_backward_tile`: the logits' gradient g * (1[target] - p) * inv_t * logit_scale, into `tile`."""
    if tile.dtype not in _FOLDED or HAS_SOFTCAP or HAS_ENTROPY_GRAD:
        return _TRL_BACKWARD_TILE(tile, tile_stride, targets, log_z, entropy, grad_logprobs, grad_entropy,
                                  vocab_start, n_cols, logit_scale, softcap, inv_t, HAS_SOFTCAP, HAS_LOGPROB_GRAD,
                                  HAS_ENTROPY_GRAD, BLOCK_SIZE)
    reached["_backward_tile"] += 1
    if not HAS_LOGPROB_GRAD:
        tile.zero_()
        return None
    z = _fp32(tile)
    scale = logit_scale * inv_t
    if scale != 1.0:
        z.mul_(scale)
    grad = grad_logprobs * scale
    z.sub_(log_z.unsqueeze(-1)).exp_().mul_(-grad.unsqueeze(-1))  # -g * p
    local = targets - vocab_start
    rows = ((local >= 0) & (local < n_cols)).nonzero().squeeze(-1)
    z.index_put_((rows, local[rows]), grad[rows], accumulate=True)  # + g at each row's target
    if z is not tile:
        tile.copy_(z)  # TRL multiplies the gradient back through the head from the tile it handed over
    return None


# bf16 tiles come from a bf16-autocast projection (hw.precision=bf16 on CPU): folded in an fp32 copy, as TRL's own
# stand-ins do (`tile.float()`), in one reused buffer instead of a fresh tile-sized tensor per call
_FOLDED = (torch.float32, torch.bfloat16)
_scratch: dict[Any, torch.Tensor] = {}


def _fp32(tile: torch.Tensor) -> torch.Tensor:
    """`tile` itself when it is fp32, else its values in a reused fp32 buffer of its shape."""
    if tile.dtype == torch.float32:
        return tile
    if tile.device not in _scratch or _scratch[tile.device].numel() < tile.numel():
        _scratch[tile.device] = torch.empty(tile.numel(), dtype=torch.float32, device=tile.device)
    return _scratch[tile.device][: tile.numel()].view(tile.shape).copy_(tile)


# rows of a tile exponentiated at a time for the entropy sum: at most 64 x 32768 floats = 8 MiB, kept between calls
_BUFFER_ROWS = 64
_buffers: dict[tuple[Any, ...], torch.Tensor] = {}


def _row_buffer(tile: torch.Tensor) -> torch.Tensor:
    """A (rows, tile width) view of one reused flat buffer, grown to the largest tile seen."""
    rows, width = max(1, min(len(tile), _BUFFER_ROWS)), tile.size(1)
    key = (tile.dtype, tile.device)
    if key not in _buffers or _buffers[key].numel() < rows * width:
        _buffers[key] = torch.empty(_BUFFER_ROWS * width, dtype=tile.dtype, device=tile.device)
    return _buffers[key][: rows * width].view(rows, width)


@contextmanager
def lean_lm_head(enabled: bool = True) -> Iterator[None]:
    """While inside, TRL's fused LM head scores only labelled positions on CPU and folds its tiles in place."""
    if not enabled:
        yield
        return
    chunked_logprob._forward_tile, chunked_logprob._backward_tile = _forward_tile, _backward_tile
    trl_utils._use_triton = _compact_on_cpu
    try:
        yield
    finally:
        chunked_logprob._forward_tile, chunked_logprob._backward_tile = _TRL_FORWARD_TILE, _TRL_BACKWARD_TILE
        trl_utils._use_triton = _TRL_USE_TRITON
        _buffers.clear()
