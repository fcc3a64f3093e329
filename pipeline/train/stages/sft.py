"""Supervised fine-tuning: next-token cross-entropy on the completion (assistant) part of each row.

Rows arrive as conversational prompt/completion pairs, so TRL masks the prompt tokens out of the loss. Multi-turn
chats are tokenized here instead, with loss on every assistant reply (data.train_on=all_assistant) or the last.

    python pipeline/run.py stage=sft model=qwen2.5_0.5b_instruct data=jsonl data.path=train.jsonl
"""

from __future__ import annotations

import logging
from typing import Any

from trl import SFTConfig, SFTTrainer

from pipeline.config.enums import OnBadRow
from pipeline.config.plan import RunPlan
from pipeline.config.schema import RunConfig
from pipeline.train.model.templates import assistant_token_rows, is_multi_turn
from pipeline.train.stages.finish import finish, train
from pipeline.train.stages.prepare import prepare, trainer_inputs
from pipeline.train.stages.trl_args import trl_args

log = logging.getLogger(__name__)


def run_sft(plan: RunPlan) -> dict[str, Any]:
    cfg = plan.cfg
    prep = prepare(plan)
    padding_free = use_padding_free(cfg, prep.long_rows)
    args = SFTConfig(**trl_args(
        plan,
        # padding-free rows are not truncated by TRL; they are known to fit already
        max_length=None if padding_free else cfg.stage.max_length,
        packing=cfg.stage.packing,
        padding_free=padding_free,
    ))
    inputs = trainer_inputs(plan, prep)
    if is_multi_turn(prep.data.train):
        # earlier assistant turns sit in the prompt: the mask is built per turn (data.train_on), not by TRL
        for split in ("train_dataset", "eval_dataset"):
            if inputs[split] is not None:
                inputs[split] = assistant_token_rows(inputs[split], prep.tokenizer, cfg.data.train_on)
    trainer = SFTTrainer(args=args, **inputs)
    train(plan, trainer, prep, bf16_frozen=True, padding_free=padding_free)
    return finish(plan, trainer, prep)


def use_padding_free(cfg: RunConfig, long_rows: int) -> bool:
    """Padding-free when asked, not packing (packing brings its own), and no row needs truncating."""
    if not cfg.stage.padding_free or cfg.stage.packing:
        return False
    # under on_bad_row=skip the long rows were dropped in prepare(); otherwise TRL must truncate them
    if long_rows and cfg.data.on_bad_row != OnBadRow.skip:
        log.info("padding-free off: %d rows need truncating to stage.max_length", long_rows)
        return False
    return True
