"""Direct Preference Optimization: raise log p(chosen) - log p(rejected) relative to a frozen reference.

loss = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]). With LoRA the
reference is the same model with adapters disabled; with full fine-tuning TRL keeps a frozen copy.

    python pipeline/run.py stage=dpo model=qwen2.5_0.5b_instruct data=jsonl data.path=pairs.jsonl
"""

from __future__ import annotations

from typing import Any

from trl import DPOConfig

from pipeline.config.plan import RunPlan
from pipeline.train.shared_prefix_dpo import SharedPrefixDPOTrainer
from pipeline.train.stages.common import finish, prepare, train, trainer_inputs, trl_args


def run_dpo(plan: RunPlan) -> dict[str, Any]:
    cfg = plan.cfg
    prep = prepare(plan)
    args = DPOConfig(**trl_args(
        plan,
        beta=cfg.stage.beta,
        # one loss; a weighted mix of several (MPO) through stage.trl is refused: loss_type is ours
        loss_type=[cfg.stage.loss_type.value],
        max_length=cfg.stage.max_length,
        label_smoothing=cfg.stage.label_smoothing,
    ))
    trainer = SharedPrefixDPOTrainer(args=args, shared_prefix=cfg.stage.shared_prefix, **trainer_inputs(plan, prep))
    train(plan, trainer, prep)
    return finish(plan, trainer, prep)
