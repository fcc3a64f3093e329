"""Direct Preference Optimization: raise log p(chosen) - log p(rejected) relative to a frozen reference.

loss = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]). With LoRA the
reference is the same model with adapters disabled; with full fine-tuning TRL keeps a frozen copy.

    python pipeline/run.py stage=dpo model=qwen2.5_0.5b_instruct data=jsonl data.path=pairs.jsonl
"""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset
from omegaconf import DictConfig
from trl import DPOConfig

from pipeline.config.plan import RunPlan
from pipeline.train.levers.shared_prefix_dpo import SharedPrefixDPOTrainer
from pipeline.train.stages.finish import finish, train
from pipeline.train.stages.prepare import prepare, trainer_inputs
from pipeline.train.stages.trl_args import trl_args

log = logging.getLogger(__name__)


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
        precompute_ref_log_probs=precompute_reference(cfg, prep.data.train, plan.world_size),
    ))
    trainer = SharedPrefixDPOTrainer(args=args, shared_prefix=cfg.stage.shared_prefix, **trainer_inputs(plan, prep))
    train(plan, trainer, prep, bf16_frozen=True)
    return finish(plan, trainer, prep)


def precompute_reference(cfg: DictConfig, train: Any, world_size: int = 1) -> bool:
    """stage.precompute_ref_log_probs, null decided by how often the run reads each training row: scored up front,
    the reference costs one forward per row; scored in the steps, one per row read. Up front wins past one pass."""
    choice = cfg.stage.precompute_ref_log_probs
    # TRL stores the scores in the dataset's cache file; an in-memory dataset's lives in a per-process temp folder
    # that the other ranks cannot open (FileNotFoundError on rank 1, seen with 2 gloo ranks)
    unshared = world_size > 1 and isinstance(train, Dataset) and not train.cache_files
    if choice and unshared:
        raise ValueError("stage.precompute_ref_log_probs=true with more than one process needs training rows read "
                         "from files through a datasets cache: TRL writes the scores to the dataset's cache, which "
                         "for these in-memory rows is private to each process. Set it to null or false.")
    if choice is not None:
        return bool(choice)
    # streamed rows cannot be scored ahead (TRL refuses); over several processes only when asked for (above)
    if not isinstance(train, Dataset) or world_size > 1:
        return False
    reads = cfg.max_steps * cfg.stage.batch_size if cfg.max_steps > 0 else cfg.stage.num_epochs * len(train)
    chosen = reads > len(train)
    if chosen:
        log.info("dpo: reference log-probs scored once per row before training (%d rows read %.1f times each)",
                 len(train), reads / len(train))
    return chosen
