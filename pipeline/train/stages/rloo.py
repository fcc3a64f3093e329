"""RLOO (REINFORCE Leave-One-Out, Ahmadian et al. 2024): sample a group of completions per prompt, score them, and
give each completion the advantage r_i - mean(r_j, j != i), the mean of the *other* completions' rewards, so the
baseline never contains the sample it judges. The KL to the reference model (beta) is subtracted from the reward,
not added to the loss. TRL's RLOOTrainer, as is: GRPO's data, reward terms, eval and vLLM generation apply; tools do
not (it has no multi-turn loop; validation refuses env=) and GRPO's levers do not (they override GRPOTrainer seams).

    python pipeline/run.py stage=rloo                          # the arithmetic set, SmolLM2, CPU
"""

from __future__ import annotations

import logging
from typing import Any

from trl import RLOOConfig, RLOOTrainer

from pipeline.config.plan import RunPlan
from pipeline.rewards import build_reward_funcs, place_reward_models
from pipeline.train.stages.finish import finish, train
from pipeline.train.stages.grpo import rollout_args
from pipeline.train.stages.prepare import prepare, trainer_inputs
from pipeline.train.stages.trl_args import trl_args

log = logging.getLogger(__name__)


def run_rloo(plan: RunPlan) -> dict[str, Any]:
    cfg = plan.cfg
    if cfg.hw.merge_lora_for_generation or cfg.hw.fast_sampling or cfg.hw.packed_linears:
        # all patch GRPOTrainer._generate_single_turn (levers/grpo_trainer.py); RLOOTrainer is used unpatched
        log.info("hw.merge_lora_for_generation / hw.fast_sampling / hw.packed_linears: off for stage=rloo (they are "
                 "GRPOTrainer levers, not verified on RLOOTrainer); TRL's own generation is used")
    reward_funcs, weights = build_reward_funcs(cfg.reward.terms)
    prep = prepare(plan)
    stage = cfg.stage
    args = RLOOConfig(**trl_args(
        plan,
        **rollout_args(cfg, weights),
        normalize_advantages=stage.normalize_advantages,
    ))
    trainer = RLOOTrainer(args=args, reward_funcs=reward_funcs, **trainer_inputs(plan, prep))
    place_reward_models(reward_funcs, trainer.accelerator.device)
    train(plan, trainer, prep, bf16_frozen=True)
    return finish(plan, trainer, prep)
