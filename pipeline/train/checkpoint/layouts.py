"""What a complete checkpoint holds, for every layout the Trainer writes (resume.py marks and checks them).

- One process or DDP: weights (model or LoRA adapter), `optimizer.pt`, `scheduler.pt`, `trainer_state.json`, and
  the RNG states: `rng_state.pth`, or `rng_state_<rank>.pth` from every rank.
- DeepSpeed (ZeRO-1/2/3, with or without offload): the file `latest` names a tag folder (`global_stepN/`) with the
  engine's model states and one optimizer shard per data-parallel rank (`*zero_pp_rank_<r>_mp_rank_00_optim_states.pt`;
  ZeRO-3 also one model-state shard per rank). Consolidated weights lie beside them whenever the engine writes
  them (ZeRO-1/2, and LoRA under ZeRO-3); ZeRO-3 full fine-tuning without `stage3_gather_16bit_weights_on_model_save`
  keeps its weights only in the shards.
- FSDP2: the gathered weights (or adapter), `scheduler.pt`, `rng_state_<rank>.pth` and `fsdp2/`: a torch distributed
  checkpoint (`.metadata` and one `__<rank>_0.distcp` per rank) of the trainable weights and the optimizer state
  (checkpoint/fsdp2.py). DCP reshards on load, so it resumes on any number of ranks.
"""

from __future__ import annotations

import re
from pathlib import Path

WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
DEEPSPEED, TORCH, FSDP2 = "deepspeed", "torch", "fsdp2"
_RNG = re.compile(r"^rng_state_(\d+)\.pth$")


def layout(path: Path) -> str:
    if (path / "latest").is_file():
        return DEEPSPEED
    return FSDP2 if (path / FSDP2).is_dir() else TORCH


def rng_files(world_size: int) -> list[str]:
    return ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{r}.pth" for r in range(world_size)]


def written_by(path: Path) -> int:
    """How many processes wrote a checkpoint that carries no record of it (markers before issue 15)."""
    return max((int(m.group(1)) + 1 for f in path.iterdir() if (m := _RNG.match(f.name))), default=1)


def missing(path: Path, world_size: int) -> list[str]:
    """What the Trainer should have written into `path` and did not; empty when the checkpoint is whole."""
    absent = [name for name in ("trainer_state.json", "scheduler.pt", *rng_files(world_size))
              if not (path / name).is_file()]
    has_weights = any((path / name).is_file() for name in WEIGHTS)
    if layout(path) == DEEPSPEED:
        tag = (path / "latest").read_text().strip()
        shards = path / tag
        if not shards.is_dir():
            return [*absent, f"{tag}/ (the DeepSpeed folder that 'latest' names)"]
        absent += [f"{tag}/zero_pp_rank_{r}_mp_rank_00_optim_states.pt (rank {r}'s optimizer shard)"
                   for r in range(world_size) if not any(shards.glob(f"*zero_pp_rank_{r}_mp_rank_00_optim_states.pt"))]
        model_states = any(shards.glob("*model_states.pt"))
        if not model_states:
            absent.append(f"{tag}/*model_states.pt")
        has_weights = has_weights or model_states
    elif layout(path) == FSDP2:
        shards = path / FSDP2
        if not (shards / ".metadata").is_file():
            absent.append(f"{FSDP2}/.metadata (the distributed checkpoint's index)")
        absent += [f"{FSDP2}/__{r}_0.distcp (rank {r}'s shards)" for r in range(world_size)
                   if not (shards / f"__{r}_0.distcp").is_file()]
    elif not (path / "optimizer.pt").is_file():
        absent.append("optimizer.pt")
    if not has_weights:
        absent.append("model or adapter weights")
    return absent
