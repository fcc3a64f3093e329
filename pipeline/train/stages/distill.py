"""On-policy distillation (Agarwal et al. 2024, "On-Policy Distillation of Language Models"; TRL's DistillationTrainer,
as is): for each prompt the student samples one completion; the frozen teacher scores every token of it, and the
loss is the generalized Jensen-Shannon divergence between the student's and the teacher's next-token distributions
over the whole vocabulary at each completion position (stage.beta 0 = forward KL, 1 = reverse KL, 0.5 = JSD). The
student learns from its own mistakes, the teacher's full distribution is the dense signal: no rewards, no reference.
TRL 1.16's trainer is fully on-policy (no lmbda mix of fixed completions). Same prompt data as GRPO.

    python pipeline/run.py stage=distill stage.teacher=outputs/grpo/<run_id>       # a GRPO run teaches SmolLM2
    python pipeline/run.py stage=chain stage.stages=[sft,distill,grpo] stage.distill.teacher=smollm2_135m
"""

from __future__ import annotations

import logging
from typing import Any

from trl import DistillationConfig, DistillationTrainer

from pipeline.config.plan import RunPlan
from pipeline.config.teacher import resolve_teacher
from pipeline.train.model.build import load_tokenizer, partitioned
from pipeline.train.model.sharded import shard_share
from pipeline.train.model.teacher import check_same_vocabulary, load_teacher, materialise_teacher
from pipeline.train.stages.finish import finish, train
from pipeline.train.stages.prepare import prepare, trainer_inputs
from pipeline.train.stages.trl_args import trl_args

log = logging.getLogger(__name__)


def run_distill(plan: RunPlan) -> dict[str, Any]:
    cfg = plan.cfg
    stage = cfg.stage
    # ---- the teacher, checked before anything heavy loads: a different tokenizer fails in seconds
    teacher = resolve_teacher(cfg)
    materialise_teacher(cfg, teacher)
    check_same_vocabulary(cfg, teacher, load_tokenizer(cfg.model, cfg.paths.cache_dir))
    # ---- data, student, held-out accuracy before training
    prep = prepare(plan)
    args = DistillationConfig(**trl_args(
        plan,
        max_completion_length=stage.max_completion_length,
        beta=stage.beta,
        temperature=stage.temperature,
        top_p=stage.top_p,
    ))
    # after `args`: under ZeRO-3 they hold the live DeepSpeed config, so the teacher loads as shards (as the student)
    teacher_model = load_teacher(cfg, teacher)
    if partitioned(teacher_model):
        log.info("ZeRO-3 sharded teacher: this rank holds %d of %d weight elements", *shard_share(teacher_model))
    # ---- train, save, measure again
    trainer = DistillationTrainer(args=args, teacher_model=teacher_model, **trainer_inputs(plan, prep))
    train(plan, trainer, prep)
    return finish(plan, trainer, prep, {"teacher": {"name": stage.teacher, "beta": stage.beta}})
