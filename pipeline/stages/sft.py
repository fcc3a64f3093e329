"""Supervised fine-tuning: next-token cross-entropy on the completion (assistant) part of each row.

Rows arrive as conversational prompt/completion pairs, so TRL masks the prompt tokens out of the loss.

    python pipeline/run.py stage=sft model=qwen2.5_0.5b_instruct data=jsonl data.path=train.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import SFTConfig, SFTTrainer

from pipeline.config import RunConfig
from pipeline.stages.common import finish, prepare, train, trainer_inputs, training_args


def run_sft(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    prep = prepare(cfg, run_dir)
    args = SFTConfig(
        **training_args(cfg, run_dir),
        max_length=cfg.stage.max_length,
        packing=cfg.stage.packing,
    )
    trainer = SFTTrainer(args=args, **trainer_inputs(cfg, run_dir, prep))
    train(cfg, run_dir, trainer, prep)
    return finish(cfg, run_dir, trainer, prep)
