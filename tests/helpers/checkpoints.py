"""Checkpoint folders laid out file by file as the Trainer writes them (names from transformers' and DeepSpeed's
savers), without training anything."""

from __future__ import annotations

from pathlib import Path

COMMON = ("trainer_state.json", "scheduler.pt", "adapter_model.safetensors")


def lay_out(path: Path, names: list[str]) -> Path:
    for name in names:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("{}" if name.endswith(".json") else "x" * 10)
    return path


def deepspeed_checkpoint(root: Path, step: int = 2, ranks: int = 2, zero3: bool = False) -> Path:
    path = root / "checkpoints" / f"checkpoint-{step}"
    tag = f"global_step{step}"
    names = [*COMMON, "latest", *(f"rng_state_{r}.pth" for r in range(ranks))]
    names += [f"{tag}/bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(ranks)]
    names += ([f"{tag}/zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(ranks)] if zero3
              else [f"{tag}/mp_rank_00_model_states.pt"])
    lay_out(path, names)
    (path / "latest").write_text(tag)
    return path
