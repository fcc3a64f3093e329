"""Everything a stage does before it builds its trainer: seed, resume point, data, model, tokenizer, row checks,
held-out accuracy before training.

Data first: a bad row should fail in seconds, not after the model has loaded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from pipeline.config.enums import OnBadRow
from pipeline.config.frozen import thawed
from pipeline.config.plan import RunPlan
from pipeline.data.early import stage_data
from pipeline.data.loader import StageData
from pipeline.envs.loading import heldout_games, training_games
from pipeline.train.checkpoint.changes import check_resume_changes
from pipeline.train.checkpoint.resume import resolve_resume
from pipeline.train.model.build import build_model, check_device, explain_load_error, load_tokenizer, model_dir
from pipeline.train.model.build import partitioned as is_sharded
from pipeline.train.model.fsdp2 import accept_full_state_dicts, fsdp2_share
from pipeline.train.model.sharded import shard_share, sharded_loading
from pipeline.train.model.templates import check_tool_rendering
from pipeline.train.observe.eval_callback import loss_rows
from pipeline.train.observe.heldout import Accuracy, stage_accuracy
from pipeline.train.runtime.fsdp2 import is_fsdp2
from pipeline.train.stages.long_rows import long_rows
from pipeline.train.stages.trl_args import callbacks, training_args

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    data: StageData
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    accuracy_before: Accuracy | None
    started: float
    # LoRA config the trainer wraps the model with; None trains every weight
    peft_config: Any = None
    # training rows over stage.max_length (truncated by TRL, or dropped under data.on_bad_row=skip)
    long_rows: int = 0
    # the checkpoint folder to resume from (resume=auto|PATH), None for a fresh start
    checkpoint: str | None = None


def prepare(plan: RunPlan) -> Prepared:
    """Data first: a bad row should fail in seconds, not after the model has loaded."""
    cfg = plan.cfg
    started = time.time()
    if cfg.hw.torch_threads:
        torch.set_num_threads(cfg.hw.torch_threads)
    set_seed(cfg.seed)
    # A bad resume=PATH (or one written by another number of DeepSpeed ranks) fails now, before data and model load.
    checkpoint = resolve_resume(cfg.resume, plan.run_dir, plan.world_size)
    config_text = OmegaConf.to_yaml(OmegaConf.structured(thawed(cfg)))
    if checkpoint is not None:  # against the config.yaml the checkpoint's run wrote, before it is replaced here
        check_resume_changes(checkpoint, OmegaConf.to_container(OmegaConf.create(config_text)),
                             cfg.checkpoint.allow_changes)
    plan.dir.write_text(plan.dir.config, config_text)
    if cfg.env.placeholder_rows is not None:
        data = game_rows(cfg)
        log.info("env %s writes each prompt in reset(): %d placeholder rows (one seed each) and %d held-out games; "
                 "the data group is unused", cfg.env.name, len(data.train), len(data.eval_prompts))
    else:
        data = stage_data(cfg.data, cfg.stage.name, cfg.seed)  # read before torch by run.py, or now
        log.info("data %s: %d training rows%s", cfg.data.name, len(data.train),
                 f", {len(data.eval_prompts)} held-out problems" if data.eval_prompts is not None else "")
    check_device(cfg.hw)
    # A random or GGUF model is written into the cache once, before training_args() starts the process group:
    # once it has started, transformers' save_pretrained writes nothing on ranks other than 0, and the rank that
    # won the conversion lock could leave an empty model folder behind.
    model_dir(cfg.model, cfg.paths.cache_dir)
    # ZeRO-3: the DeepSpeed config must be live before from_pretrained, so each rank loads only its shard.
    live_ds_config = sharded_loading(plan, training_args(plan))
    try:
        tokenizer = load_tokenizer(cfg.model, cfg.paths.cache_dir)
        # the base model, or a previous stage's result (init_from: chained stages), k-bit prepared; a reward model
        # gets a scalar head instead of the LM head
        model, peft_config = build_model(cfg, reward_head=not plan.stage.policy)
    except OSError as err:
        raise explain_load_error(cfg.model.name, cfg.model.path, err) from err
    check_tool_rendering(tokenizer, data.train)  # before training: a template that drops tools is refused
    long = 0
    if plan.stage.checks_row_length:
        skip = cfg.data.on_bad_row == OnBadRow.skip
        limit = getattr(cfg.stage, plan.stage.length_key)
        data.train, long = long_rows(data.train, tokenizer, limit, skip, data.drops)
    del live_ds_config  # the model has loaded; the stage's own TrainingArguments register the config from now on
    if is_sharded(model):
        log.info("ZeRO-3 sharded load: this rank holds %d of %d weight elements", *shard_share(model))
    elif is_fsdp2(model):
        log.info("FSDP2 sharded load: this rank holds %d of %d weight elements", *fsdp2_share(model))
        accept_full_state_dicts(model)  # a resume loads the checkpoint's gathered weights into the shards
    if not plan.stage.policy:
        data.eval_prompts = None  # a reward model does not generate: no held-out answer accuracy
    before = stage_accuracy(plan, model, tokenizer, data.eval_prompts, "before")
    return Prepared(data, tokenizer, model, before, started, peft_config, long, checkpoint)


def game_rows(cfg: Any) -> StageData:
    """An environment that writes its own prompts (env.placeholder_rows: guess_number) trains on placeholder rows,
    one seed each, and is measured on held-out games (eval.limit of them, 64 by default): a game counts as won
    when its reward is positive."""
    return StageData(training_games(cfg.env, cfg.seed), heldout_games(cfg.env, cfg.seed, cfg.eval.limit))


def trainer_inputs(plan: RunPlan, prep: Prepared) -> dict[str, Any]:
    """Keyword arguments that SFTTrainer, DPOTrainer and GRPOTrainer take the same way."""
    return {
        "model": prep.model,
        "train_dataset": prep.data.train,
        # held-out rows in the training shape when eval.every_steps asks for the eval loss (EvalCallback runs it)
        "eval_dataset": loss_rows(plan, prep.data.eval_rows),
        "processing_class": prep.tokenizer,
        # LoRA is applied by the trainer (after any k-bit preparation in build_model); None trains every weight.
        "peft_config": prep.peft_config,
        "callbacks": callbacks(plan),
    }
