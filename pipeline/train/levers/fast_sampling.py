"""Inverse-CDF sampling in generation (`hw.fast_sampling`): the same distribution as `torch.multinomial`, cheaper.

transformers samples each next token with `torch.multinomial`, which draws one exponential per vocabulary entry
(49k per token on SmolLM2, ~25 ms per decode step on 2 CPU cores). One uniform per row against the cumulative
distribution samples the same distribution at a fraction of the cost. Measured (SmolLM2-135M + LoRA r16, 32
completions x 64 tokens, 2 cores): 11.3 -> 9.2 s per generation.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from pipeline.train.trl_surface import torch_multinomial


def _inverse_cdf(probs: torch.Tensor, num_samples: int, *args: Any, **kwargs: Any) -> torch.Tensor:
    if probs.dim() != 2 or num_samples != 1 or args or kwargs:
        return _multinomial(probs, num_samples, *args, **kwargs)
    cumulative = probs.cumsum(-1)
    point = torch.rand(probs.size(0), 1, device=probs.device, dtype=cumulative.dtype) * cumulative[:, -1:]
    # right=True: the first entry whose cumulative mass exceeds the point, so zero-probability entries never win
    return torch.searchsorted(cumulative, point, right=True).clamp_(max=probs.size(1) - 1)


_multinomial = torch.multinomial


def inverse_cdf_sampling() -> AbstractContextManager[Any]:
    """Route transformers' single-sample `torch.multinomial` calls through `_inverse_cdf` while inside."""
    return torch_multinomial(_inverse_cdf)
