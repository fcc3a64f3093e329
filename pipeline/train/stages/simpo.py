"""SimPO: DPO without a reference model, on length-normalised log-probabilities and with a target margin.

loss = -log sigmoid(beta/|y_w| * log pi(y_w) - beta/|y_l| * log pi(y_l) - gamma), run by TRL's CPO trainer with
loss_type=simpo; cpo_alpha > 0 adds CPO's NLL term on the chosen answer.

    python pipeline/run.py stage=simpo model=qwen2.5_0.5b_instruct data=jsonl data.path=pairs.jsonl
"""

from __future__ import annotations

from typing import Any

from trl.experimental.cpo import CPOConfig, CPOTrainer

from pipeline.config.enums import CPOLoss
from pipeline.config.plan import RunPlan
from pipeline.train.stages.finish import run_trl_stage


def run_simpo(plan: RunPlan) -> dict[str, Any]:
    stage = plan.cfg.stage
    return run_trl_stage(
        plan, CPOConfig, CPOTrainer,
        loss_type=CPOLoss.simpo.value,
        beta=stage.beta,
        simpo_gamma=stage.simpo_gamma,
        cpo_alpha=stage.cpo_alpha,
        max_length=stage.max_length,
    )
