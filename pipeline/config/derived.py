"""Values derived from a config and the environment: world size, batch split, DeepSpeed JSON, rank, chain steps.

Pure functions of (config, environment), computed once into the run plan (`pipeline.config.plan`); the checks
use them too, so a rule and the run it guards cannot compute a value two ways.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.config.data_schema import DataConfig
from pipeline.config.enums import Device, ShardEngine
from pipeline.config.env_schema import EnvConfig
from pipeline.config.run_dir import RunDir
from pipeline.config.schema import RunConfig
from pipeline.config.stage_table import CHAINABLE, stage_spec

REPO = Path(__file__).resolve().parents[2]


def world_size(cfg: RunConfig) -> int:
    return cfg.hw.num_processes * cfg.hw.num_nodes


def fsdp2(cfg: RunConfig) -> bool:
    """zero=fsdp2: PyTorch's fully_shard over all ranks instead of DeepSpeed (pipeline/train/model/fsdp2.py)."""
    return cfg.zero.engine == ShardEngine.fsdp2


def shards_weights(cfg: RunConfig) -> bool:
    """Each rank holds only a shard of every weight (ZeRO-3 or FSDP2 over several ranks): a forward pass needs
    every rank, so generation on rank 0 alone would hang."""
    return (cfg.zero.stage >= 3 or fsdp2(cfg)) and world_size(cfg) > 1


def split_batch(cfg: RunConfig) -> tuple[int, int]:
    """stage.batch_size (global) -> (per-device micro-batch, gradient accumulation steps)."""
    per_rank = cfg.stage.batch_size // world_size(cfg)
    per_device = max(1, min(cfg.hw.micro_batch, per_rank))
    group = packed_group(cfg)
    if group and per_device % group and per_rank % group == 0:
        # GRPO's shared-prefix layout saves work only on whole groups: a group split into pairs forwards its
        # prompt once per pair (measured no faster than per-row, bench/README), so micro-batches round up to groups
        per_device = min(per_rank, -(-per_device // group) * group)
    return per_device, max(1, per_rank // per_device)


def packed_group(cfg: RunConfig) -> int:
    """Rows per group when GRPO packs each group's prompt once (stage.shared_prefix) on CPU, where only whole groups
    per micro-batch were measured to pay; 0 otherwise. On CUDA (FlexAttention's block mask) micro-batches keep
    hw.micro_batch: part of a group still shares its prompt, and the GPU memory plan is not changed unmeasured."""
    stage = cfg.stage
    if getattr(stage, "shared_prefix", False) and hasattr(stage, "num_generations") and cfg.hw.device == Device.cpu:
        return int(stage.num_generations)
    return 0


def inside_launcher() -> bool:
    # torchrun, accelerate launch and the deepspeed launcher all export WORLD_SIZE to every rank.
    return "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def resolve(path: str) -> Path:
    """Relative paths name files in the repo (hostfiles/, ds_configs/) unless they exist from the cwd."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO / p


def ds_config_path(cfg: RunConfig) -> Path | None:
    """The DeepSpeed JSON of the zero profile: a name in ds_configs/, or a path; None for zero=none."""
    if not cfg.zero.stage or not cfg.zero.config_file:
        return None
    name = cfg.zero.config_file
    return resolve(name) if "/" in name else REPO / "ds_configs" / name


def sequence_tokens(cfg: RunConfig) -> int:
    """Tokens of one training sequence (the memory estimate's length): the stage's length key, plus the
    prompt tokens it assumes when the key bounds only the completion."""
    spec = stage_spec(cfg.stage.name)
    return spec.assumed_prompt_tokens + getattr(cfg.stage, spec.length_key)


# A string value "chain:<name>" in a step's config is replaced by that earlier step's final/ dir.
CHAIN_REF = "chain:"


def chain_steps(cfg: RunConfig, run_dir: Path | None = None) -> list[RunConfig]:
    """One RunConfig per sub-stage: each policy step starts from the previous policy step's final/ (init_from), and
    "chain:<name>" values point at an earlier step's final/. Raises ValueError for an unknown sub-stage or a
    reference to a step that is not in the chain."""
    run_dir = Path(cfg.output_dir) if run_dir is None else run_dir
    names = list(cfg.stage.stages)
    unknown = [name for name in names if name not in CHAINABLE]
    if unknown or not names:
        raise ValueError(f"stage.stages={names}: each must be one of {', '.join(CHAINABLE)} "
                         f"(e.g. stage.stages=[{','.join(CHAINABLE[::2])}]).")
    configs, init_from, finals = [], cfg.init_from, {}
    for index, name in enumerate(names, 1):
        step_dir = RunDir(run_dir).chain_step(index, name)
        step = dataclasses.replace(
            cfg,
            stage=getattr(cfg.stage, name),
            data=_data_for(cfg.data, cfg.stage.data.get(name, {})),
            # tools run in GRPO's rollouts only: a chain's other steps (an SFT warm start) run without them, and
            # their held-out accuracy without the tools would not be the chain's task (the tool step measures it)
            env=cfg.env if stage_spec(name).tools else EnvConfig(name="none"),
            eval=cfg.eval if stage_spec(name).tools or not cfg.env.active else
            dataclasses.replace(cfg.eval, heldout=False),
            output_dir=str(step_dir.root),
            init_from=init_from,
        )
        configs.append(_resolve_refs(step, finals, names, f"step {index} ({name})"))
        finals[name] = str(step_dir.final)
        if stage_spec(name).policy:  # a reward model is not the policy the next step trains
            init_from = str(step_dir.final)
    return configs


def _resolve_refs(value: Any, finals: dict[str, str], names: list[str], where: str) -> Any:
    """`value` with every "chain:<name>" string replaced by that earlier step's final/ dir; a reference to a step
    that runs later is kept (the step it sits in runs before the reference exists, so it cannot be using it)."""
    if isinstance(value, str) and value.startswith(CHAIN_REF):
        name = value[len(CHAIN_REF):]
        if name not in names:
            raise ValueError(f"{value} in {where}: no step named {name} in stage.stages={names}; refer to one of "
                             f"{', '.join(CHAIN_REF + n for n in names)}.")
        return finals.get(name, value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {f.name: _resolve_refs(getattr(value, f.name), finals, names, where)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changed)
    if isinstance(value, dict):
        return type(value)({k: _resolve_refs(v, finals, names, where) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return type(value)(_resolve_refs(v, finals, names, where) for v in value)
    return value


def _data_for(data: DataConfig, overrides: dict[str, Any]) -> DataConfig:
    if not overrides:
        return data
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(data), overrides))
