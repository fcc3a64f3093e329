"""Our layouts against TRL's per-row path: one tolerance, one comparison, both paths on one trainer."""

from __future__ import annotations

import dataclasses

import torch

RTOL = 1e-5


def both_paths(trainer, run) -> tuple:
    """run(trainer) with the per-row path (TRL's own method) and with the shared-prefix path: the GRPO trainer's
    switch is in its `levers`, the DPO trainer's is its own `shared_prefix`."""
    results = []
    for shared in (False, True):
        if hasattr(trainer, "levers"):
            trainer.levers = dataclasses.replace(trainer.levers, shared_prefix=shared)
        else:
            trainer.shared_prefix = shared
        results.append(run(trainer))
    return tuple(results)


def assert_same(shared: torch.Tensor, per_row: torch.Tensor) -> None:
    torch.testing.assert_close(shared, per_row, rtol=RTOL, atol=RTOL * float(per_row.abs().max()))


def allow_flex_backward_on_cpu(monkeypatch) -> None:
    """torch 2.13 refuses any FlexAttention backward on CPU ("FlexAttention does not support backward on CPU": its
    compiled CPU kernel has none), though its eager reference implementation, the one torch checks its CUDA
    kernels against, runs on any device. Lifted for one test, on CPU only, so gradients through the block mask
    can be compared here; the pipeline itself never takes that path on CPU (prefix_flex.attention_path)."""
    import torch.nn.attention.flex_attention as flex

    check = flex._validate_device

    def devices_but_cpu(query, key, value) -> None:
        if query.device.type != "cpu":
            check(query, key, value)

    monkeypatch.setattr(flex, "_validate_device", devices_but_cpu)
