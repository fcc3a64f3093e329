"""A finished (or running) run's typed config, read back from <run>/config.yaml: what the tools load a run with, and
how stage=distill rebuilds a teacher run's base. Light: no torch."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from pipeline.config.run_dir import RunDir
from pipeline.config.schema import RunConfig
from pipeline.config.stage_table import UnknownStageError, stage_spec
from pipeline.config.user_errors import UserError


class RunDirError(UserError, ValueError):
    """The directory is not a finished run; the message says what is missing and what to do."""


def run_config(run_dir: Path) -> RunConfig:
    """The typed config a run used (<run>/config.yaml, written before training)."""
    path = RunDir(run_dir).config
    if not path.is_file():
        raise RunDirError(f"{path} not found: {run_dir} is not a run directory. Fix: give outputs/<stage>/<run_id>.")
    raw = OmegaConf.load(path)
    # `stage` is typed per option: rebuild it from the schema its name selects, so its fields are checked too.
    try:
        stage_schema = stage_spec(raw.stage.name).schema
    except UnknownStageError:
        raise RunDirError(f"{path}: unknown stage.name={raw.stage.name}.") from None
    stage = OmegaConf.merge(OmegaConf.structured(stage_schema), raw.stage)
    del raw["stage"]
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), raw)
    cfg.stage = stage
    return OmegaConf.to_object(cfg)
