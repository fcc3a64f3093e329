"""Odds-Ratio Preference Optimization: SFT and preference in one stage, with no reference model.

loss = NLL(chosen) - beta * log sigmoid(log odds(chosen) - log odds(rejected)), where odds(y) = p(y) / (1 - p(y))
and p is the length-normalised sequence probability (beta is the paper's lambda).

    python pipeline/run.py stage=orpo model=qwen2.5_0.5b_instruct data=jsonl data.path=pairs.jsonl
"""

from __future__ import annotations

from typing import Any

from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from pipeline.config.plan import RunPlan
from pipeline.train.stages.finish import run_trl_stage


def run_orpo(plan: RunPlan) -> dict[str, Any]:
    stage = plan.cfg.stage
    return run_trl_stage(plan, ORPOConfig, ORPOTrainer, beta=stage.beta, max_length=stage.max_length)
