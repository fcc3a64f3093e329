"""Reward model: a scalar head on the model, trained so the chosen answer scores above the rejected one.

loss = -log sigmoid(r(x, y_w) - r(x, y_l)) (Bradley-Terry). `stage.heldout_pairs` pairs are kept out of training
and scored at the end: the share ranked right is `pair_accuracy` in summary.json. final/ holds a full
AutoModelForSequenceClassification (LoRA merged into it), so a GRPO reward-model term can load it directly.

    python pipeline/run.py stage=rm model=qwen2.5_0.5b_instruct data=jsonl data.path=pairs.jsonl
"""

from __future__ import annotations

import logging
from typing import Any

from trl import RewardConfig, RewardTrainer

from pipeline.config.plan import RunPlan
from pipeline.train.stages.finish import finish, train
from pipeline.train.stages.prepare import prepare, trainer_inputs
from pipeline.train.stages.trl_args import trl_args

log = logging.getLogger(__name__)


def run_rm(plan: RunPlan) -> dict[str, Any]:
    stage = plan.cfg.stage
    prep = prepare(plan)
    heldout = None
    if stage.heldout_pairs > 0:
        if stage.heldout_pairs >= len(prep.data.train):
            raise ValueError(f"stage.heldout_pairs={stage.heldout_pairs} leaves no training pairs "
                             f"({len(prep.data.train)} rows): lower it, or 0 to hold none out.")
        split = prep.data.train.train_test_split(test_size=stage.heldout_pairs, seed=plan.cfg.seed)
        prep.data.train, heldout = split["train"], split["test"]
    args = RewardConfig(**trl_args(plan, max_length=stage.max_length))
    trainer = RewardTrainer(args=args, **trainer_inputs(plan, prep))
    train(plan, trainer, prep)
    extra: dict[str, Any] = {"pair_accuracy": None, "heldout_pairs": 0}
    if heldout is not None:
        metrics = trainer.evaluate(heldout)
        extra = {"pair_accuracy": metrics["eval_accuracy"], "heldout_pairs": len(heldout)}
        log.info("reward model: chosen ranked above rejected in %.1f%% of %d held-out pairs",
                 100 * metrics["eval_accuracy"], len(heldout))
    # A loadable reward model, not an adapter: the next consumer builds it with AutoModelForSequenceClassification.
    if hasattr(trainer.model, "merge_and_unload"):
        trainer.model = trainer.model.merge_and_unload()
    return finish(plan, trainer, prep, extra)
