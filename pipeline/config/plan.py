"""The run plan: a validated config plus everything derived from it, computed once and read-only.

    plan = plan_run(composed, run_dir)   # after Hydra composes; raises ConfigError listing every problem
    plan.cfg                             # the typed RunConfig, frozen: assigning to it raises FrozenConfigError
    plan.stage                           # its stage table entry
    plan.micro_batch, plan.grad_accum    # stage.batch_size split over plan.world_size processes
    plan.ds_config                       # the zero profile's DeepSpeed JSON, or None
    plan.dir                             # the run directory (layout + rank-0 writer)
    plan.steps                           # a chain's sub-plans, in order (empty for a single stage)

The launcher, the dry run, the checks' derived values, and every stage read this object; nothing downstream
recomputes a derived value or changes the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from pipeline.config.checks import to_run_config
from pipeline.config.derived import (
    chain_steps,
    ds_config_path,
    inside_launcher,
    rank,
    sequence_tokens,
    split_batch,
    world_size,
)
from pipeline.config.frozen import freeze
from pipeline.config.run_dir import RunDir
from pipeline.config.schema import RunConfig
from pipeline.config.stage_table import Stage, stage_spec


@dataclass(frozen=True)
class RunPlan:
    cfg: RunConfig
    stage: Stage
    dir: RunDir
    world_size: int
    rank: int
    # Started by a launcher (WORLD_SIZE set): the ranks exist already, no re-launch.
    launched: bool
    # Per-device micro-batch and gradient accumulation (0 for a chain: each step has its own).
    micro_batch: int
    grad_accum: int
    ds_config: Path | None
    # Tokens of one training sequence, as the memory estimate assumes it (0 for a chain).
    sequence_tokens: int
    steps: tuple[RunPlan, ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.dir.root


def plan_run(composed: DictConfig, run_dir: Path) -> RunPlan:
    """Validate the composed config and resolve its plan; raises ConfigError listing every problem."""
    return resolve_plan(to_run_config(composed), run_dir)


def resolve_plan(cfg: RunConfig, run_dir: Path) -> RunPlan:
    """The plan of an already validated config (chain steps get plans of their own, in their sub-dirs)."""
    spec = stage_spec(cfg.stage.name)
    steps: tuple[RunPlan, ...] = ()
    micro, accum, tokens = 0, 0, 0
    if spec.chain:
        steps = tuple(resolve_plan(sub, Path(sub.output_dir)) for sub in chain_steps(cfg, run_dir))
    else:
        (micro, accum), tokens = split_batch(cfg), sequence_tokens(cfg)
    current = rank()
    return RunPlan(
        cfg=freeze(cfg),
        stage=spec,
        dir=RunDir(run_dir, writes=current == 0),
        world_size=world_size(cfg),
        rank=current,
        launched=inside_launcher(),
        micro_batch=micro,
        grad_accum=accum,
        ds_config=ds_config_path(cfg),
        sequence_tokens=tokens,
        steps=steps,
    )
