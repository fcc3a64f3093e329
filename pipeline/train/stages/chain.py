"""Chained stages: SFT, then GRPO or DPO on the SFT result, in one run dir (`stage=sft_then_grpo|sft_then_dpo`).

Each sub-stage is an ordinary stage run in <run dir>/<i>_<name>/ with its own config (`stage.<name>`), data
(`data` with `stage.data.<name>` overrides on top) and summary; every stage after the first gets
`init_from=<previous sub-dir>/final`, so it starts from the previous adapter (merged) or full model. A sub-stage
whose summary.json and final/ exist is skipped, so re-running the same command (same output_dir or RUN_ID) after
an interruption resumes at the first unfinished stage.

    python pipeline/run.py experiment=medical_sft_then_grpo_qwen3
    python pipeline/run.py stage=sft_then_dpo data=jsonl data.path=pairs.jsonl   # SFT on chosen, then DPO

This module stays light at import time: validation expands chains with `sub_configs` before torch loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.config.schema import DataConfig, RunConfig

log = logging.getLogger(__name__)

SUB_STAGES = ("sft", "dpo", "grpo")


def sub_dirs(cfg: RunConfig, run_dir: Path) -> list[Path]:
    return [run_dir / f"{i}_{name}" for i, name in enumerate(cfg.stage.stages, 1)]


def sub_configs(cfg: RunConfig, run_dir: Path | None = None) -> list[RunConfig]:
    """One RunConfig per sub-stage, chained through init_from; raises ValueError for an unknown sub-stage."""
    run_dir = Path(cfg.output_dir) if run_dir is None else run_dir
    unknown = [name for name in cfg.stage.stages if name not in SUB_STAGES]
    if unknown or not cfg.stage.stages:
        raise ValueError(f"stage.stages={list(cfg.stage.stages)}: each must be one of {', '.join(SUB_STAGES)} "
                         "(e.g. stage.stages=[sft,grpo]).")
    configs, init_from = [], cfg.init_from
    for name, sub_dir in zip(cfg.stage.stages, sub_dirs(cfg, run_dir), strict=True):
        configs.append(dataclasses.replace(
            cfg,
            stage=getattr(cfg.stage, name),
            data=_data_for(cfg.data, cfg.stage.data.get(name, {})),
            output_dir=str(sub_dir),
            init_from=init_from,
        ))
        init_from = str(sub_dir / "final")
    return configs


def _data_for(data: DataConfig, overrides: dict[str, Any]) -> DataConfig:
    if not overrides:
        return data
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(data), overrides))


def finished(sub_dir: Path) -> bool:
    return (sub_dir / "summary.json").exists() and (sub_dir / "final").is_dir()


def run_chain(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    from pipeline.train.stages import run_stage
    from pipeline.train.stages.common import is_rank_zero

    summaries = []
    for sub in sub_configs(cfg, run_dir):
        sub_dir = Path(sub.output_dir)
        if finished(sub_dir):
            log.info("%s already finished in %s: skipped (delete the dir to redo it)", sub.stage.name, sub_dir)
            summaries.append(json.loads((sub_dir / "summary.json").read_text()))
            continue
        log.info("chain %s: running %s in %s%s", cfg.stage.name, sub.stage.name, sub_dir,
                 f" from {sub.init_from}" if sub.init_from else "")
        summaries.append(run_stage(sub, sub_dir))
    summary = {
        "stage": cfg.stage.name,
        "stages": summaries,
        "steps": sum(s.get("steps", 0) for s in summaries),
        "final_dir": summaries[-1].get("final_dir"),
    }
    if is_rank_zero():
        from pipeline.train.monitoring import write_json_atomic

        write_json_atomic(run_dir / "summary.json", summary)
    return summary
