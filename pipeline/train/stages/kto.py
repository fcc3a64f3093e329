"""Kahneman-Tversky Optimization: learn from single completions labelled desirable or undesirable, no pairs.

With r(y) = beta * log(pi(y) / ref(y)) and z a batch estimate of KL(pi || ref) (from mismatched prompt/completion
pairs of the same micro-batch), the loss is w_d * (1 - sigmoid(r - z)) for desirable rows and
w_u * (1 - sigmoid(z - r)) for undesirable ones: a prospect-theory value function around the reference point z.

    python pipeline/run.py stage=kto model=qwen2.5_0.5b_instruct data=jsonl data.path=labeled.jsonl
"""

from __future__ import annotations

from typing import Any

from trl import KTOConfig, KTOTrainer

from pipeline.config.plan import RunPlan
from pipeline.train.stages.finish import run_trl_stage


def run_kto(plan: RunPlan) -> dict[str, Any]:
    stage = plan.cfg.stage
    return run_trl_stage(
        plan, KTOConfig, KTOTrainer,
        beta=stage.beta,
        loss_type=stage.loss_type.value,
        desirable_weight=stage.desirable_weight,
        undesirable_weight=stage.undesirable_weight,
        max_length=stage.max_length,
    )
