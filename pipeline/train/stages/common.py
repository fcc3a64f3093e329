"""What every stage does around its TRL trainer: load data and model, measure, save, summarise.

Each stage file keeps its own visible sequence (prepare -> build trainer -> train -> finish); this module holds
only the steps that are identical for all of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, set_seed

from pipeline.config.enums import Device, OnBadRow, Precision
from pipeline.config.frozen import thawed
from pipeline.config.plan import RunPlan
from pipeline.data import StageData, load_stage_data
from pipeline.data.predictions import write_predictions
from pipeline.train.distributed import release_shared_memory_names, warn_stale_build_locks
from pipeline.train.eval_callback import best_checkpoint, eval_callbacks, loss_rows
from pipeline.train.guards import NanGuard, explain_load_error, long_rows
from pipeline.train.heldout import Accuracy, heldout_accuracy
from pipeline.train.lean_lm_head import lean_lm_head
from pipeline.train.modeling import build_model, check_device, load_tokenizer, model_dir
from pipeline.train.modeling import partitioned as is_sharded
from pipeline.train.monitoring import CompletionsCallback, best_metrics, build_callbacks, final_metrics, wandb_env
from pipeline.train.plots import plot_run
from pipeline.train.resume import CheckpointCallback, SignalCheckpoint, already_done, load_finished, resolve_resume
from pipeline.train.saving import save_model_dir
from pipeline.train.sharded import shard_share, sharded_loading
from pipeline.train.templates import check_tool_rendering

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
    plan.dir.write_text(plan.dir.config, OmegaConf.to_yaml(OmegaConf.structured(thawed(cfg))))
    data = load_stage_data(cfg.data, cfg.stage.name, cfg.seed)
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
    if not plan.stage.policy:
        data.eval_prompts = None  # a reward model does not generate: no held-out answer accuracy
    before = _accuracy(plan, model, tokenizer, data, "before")
    return Prepared(data, tokenizer, model, before, started, peft_config, long, checkpoint)


def training_args(plan: RunPlan) -> dict[str, Any]:
    """TrainingArguments shared by SFTConfig, DPOConfig and GRPOConfig."""
    cfg = plan.cfg
    stage, hw = cfg.stage, cfg.hw
    return {
        "output_dir": str(plan.dir.checkpoints),
        "per_device_train_batch_size": plan.micro_batch,
        "per_device_eval_batch_size": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "learning_rate": stage.learning_rate,
        "lr_scheduler_type": stage.lr_scheduler,
        # transformers 5: a float in [0, 1) is a fraction of the total steps
        "warmup_steps": stage.warmup_steps or stage.warmup_ratio,
        "num_train_epochs": stage.num_epochs,
        "max_steps": cfg.max_steps,
        "weight_decay": stage.weight_decay,
        "max_grad_norm": stage.max_grad_norm,
        "optim": stage.optim,
        "logging_steps": stage.logging_steps,
        "save_strategy": "steps" if stage.save_steps > 0 else "no",
        "save_steps": stage.save_steps if stage.save_steps > 0 else 500,
        # pipeline.train.resume keeps the newest checkpoint.keep complete checkpoints (the Trainer's own rotation
        # cannot tell a half-written checkpoint from a complete one).
        "save_total_limit": None,
        # SFT/DPO batches carry input_ids to count; GRPO counts its own tokens.
        "include_num_input_tokens_seen": "non_padding" if plan.stage.counts_tokens else "no",
        # TensorBoard is attached by `callbacks` with our directory; the rest go through report_to.
        "report_to": [t for t in cfg.logging.report_to if t != "tensorboard"] or "none",
        "run_name": f"{stage.name}-{cfg.run_id}",
        "seed": cfg.seed,
        "use_cpu": hw.device == Device.cpu,
        "bf16": hw.precision == Precision.bf16,
        "fp16": hw.precision == Precision.fp16,
        "gradient_checkpointing": hw.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if hw.gradient_checkpointing else None,
        # CUDA-only levers, refused elsewhere by validation (pipeline/config/gpu_levers.py)
        "use_liger_kernel": hw.liger_kernel,
        "tf32": True if hw.tf32 else None,
        # a rank waiting longer than this on a collective fails (pipeline.distributed names it) instead of hanging
        "ddp_timeout": hw.collective_timeout_s,
        # the zero profile's JSON; its "auto" values are filled from the values above, so they cannot disagree
        "deepspeed": _deepspeed_config(plan),
    }


def trl_args(plan: RunPlan, **stage_args: Any) -> dict[str, Any]:
    """The keyword arguments of a stage's TRL config: training_args, the stage's own, then stage.trl as is.

    Validation refuses stage.trl keys that ours set (pipeline/config/trl_checks.py); a clash left here fails
    loudly rather than letting one silently win.
    """
    ours = {**training_args(plan), **stage_args}
    extra = thawed(plan.cfg.stage.trl)
    clash = sorted(set(ours) & set(extra))
    if clash:
        raise ValueError(f"stage.trl sets {', '.join(clash)}, which the pipeline sets from its own keys: remove "
                         "them from stage.trl (pipeline/config/trl_checks.py: OWNED names the key to use).")
    return {**ours, **extra}


def callbacks(plan: RunPlan) -> list[TrainerCallback]:
    # NanGuard on every rank (each holds gradients); monitoring on rank 0 only.
    cfg, run_dir = plan.cfg, plan.run_dir
    wandb_env(cfg.logging, run_dir)
    # CheckpointCallback on every rank too: its barrier waits for all ranks' files before rank 0 marks them.
    found: list[TrainerCallback] = [NanGuard(), CheckpointCallback(run_dir, cfg.checkpoint.keep)]
    if cfg.checkpoint.save_on_signal:
        found.append(SignalCheckpoint())
    if plan.dir.writes:
        found += build_callbacks(run_dir, cfg.logging, cfg.stage.batch_size)
        found += eval_callbacks(plan)
    elif cfg.zero.stage >= 3 and cfg.logging.samples_every > 0:
        # ZeRO-3: rank 0's sample generation gathers weights from every rank, so every rank must generate too.
        logging_cfg = cfg.logging
        found.append(CompletionsCallback(run_dir, None, logging_cfg.samples_every, logging_cfg.samples_shown,
                                         write=False))
    if not plan.dir.writes:
        # ZeRO-3: the other ranks join eval.every_steps' generation and best/'s gather (none otherwise).
        found += eval_callbacks(plan)
    return found


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


def train(plan: RunPlan, trainer: Trainer, prep: Prepared) -> None:
    """trainer.train(), resumed when asked; exits with 128+signal after a SIGTERM/SIGINT checkpoint."""
    cfg, run_dir = plan.cfg, plan.run_dir
    checkpoint = prep.checkpoint
    release_shared_memory_names()
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "bind"):
            callback.bind(trainer, prep.data.eval_prompts)
    if already_done(checkpoint, cfg.max_steps):
        load_finished(trainer, checkpoint)
        return
    with lean_lm_head(cfg.hw.lean_lm_head):
        trainer.train(resume_from_checkpoint=checkpoint)
    stopper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, SignalCheckpoint)), None)
    if stopper is not None and stopper.received is not None:
        # No final/ and no summary: the run is not finished, and nothing may look as if it were.
        log.warning("stopped by signal %d at step %d; checkpoint saved in %s. Continue with: resume=auto "
                    "output_dir=%s", stopper.received, trainer.state.global_step, plan.dir.checkpoints, run_dir)
        raise SystemExit(128 + stopper.received)


def run_trl_stage(plan: RunPlan, config_class: type, trainer_class: type, **stage_args: Any) -> dict[str, Any]:
    """A stage that is one TRL trainer with its own knobs (`stage_args`) and nothing else: prepare, train, finish."""
    prep = prepare(plan)
    args = config_class(**trl_args(plan, **stage_args))
    trainer = trainer_class(args=args, **trainer_inputs(plan, prep))
    train(plan, trainer, prep)
    return finish(plan, trainer, prep)


def finish(plan: RunPlan, trainer: Trainer, prep: Prepared, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save the final model, measure again, write summary.json (plus the stage's `extra` entries); returns the
    summary."""
    cfg, run_dir = plan.cfg, plan.run_dir
    train_seconds = time.time() - prep.started
    # final/ never holds half a model (pipeline.train.saving)
    final = save_model_dir(plan.dir, trainer, prep.tokenizer, plan.dir.final)
    after = _accuracy(plan, trainer.model, prep.tokenizer, prep.data, "after")
    # e.g. the MCQ recipe's id,answer submission file, from the held-out completions just written
    write_predictions(cfg.data, plan.dir, prep.data.eval_prompts)
    steps = trainer.state.global_step
    summary = {
        "stage": cfg.stage.name,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "peft": cfg.peft.method.value,
        "quant": cfg.quant.method.value,
        "hw": cfg.hw.name,
        "zero": cfg.zero.name,
        "world_size": trainer.args.world_size,
        # what really ran: DeepSpeed's ZeRO stage as the engine reports it, or DDP / one process
        "engine": _engine(trainer),
        "run_id": cfg.run_id,
        "steps": steps,
        "wall_time_s": round(time.time() - prep.started, 2),
        "seconds_per_step": round(_train_runtime(trainer, train_seconds) / max(steps, 1), 3),
        "metrics": final_metrics(trainer.state.log_history),
        "best": best_metrics(trainer.state.log_history),
        # the step <run>/best/ holds (eval.every_steps > 0): {step, metric, value}
        "best_checkpoint": best_checkpoint(trainer),
        "accuracy_before": prep.accuracy_before.value if prep.accuracy_before else None,
        "accuracy_after": after.value if after else None,
        "eval_problems": after.total if after else 0,
        "dropped_rows": prep.data.drops.total,
        "rows_over_max_length": prep.long_rows,
        "dropped_by_reason": {reason: r.count for reason, r in prep.data.drops.reasons.items()},
        # rows taken from each mixed source (registry entries, data.mix); {} for one source
        "rows_per_source": prep.data.sources,
        "final_dir": str(final),
        **(extra or {}),
    }
    # every rank says it trained: the evidence that all of them took part
    log.info("rank %d/%d finished %d optimizer steps", trainer.args.process_index, trainer.args.world_size, steps)
    plan.dir.write_json(plan.dir.summary, summary)
    if plan.dir.writes:  # the figures and the closing report come from rank 0 alone
        plot_run(run_dir)
        _report(summary)
    return summary


def _accuracy(plan: RunPlan, model, tokenizer, data: StageData, phase: str) -> Accuracy | None:
    # Once ZeRO-3 has partitioned the weights, each forward gathers them from every rank: generation on rank 0
    # alone would hang, so all ranks generate the same problems (generate syncs their steps); rank 0 writes.
    cfg, writes = plan.cfg, plan.dir.writes
    partitioned = cfg.zero.stage >= 3 and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    if data.eval_prompts is None or not (writes or partitioned):
        return None
    if phase == "before" and is_sharded(model):
        # loaded under zero.Init: no forward pass until the trainer's DeepSpeed engine gathers the shards
        log.info("held-out accuracy before training: not measured (ZeRO-3 weights are sharded until training)")
        return None
    acc = heldout_accuracy(
        model, tokenizer, data.eval_prompts,
        max_new_tokens=cfg.stage.eval_max_new_tokens, batch_size=cfg.hw.eval_batch,
        predictions_path=plan.dir.samples / f"eval_{phase}.jsonl" if writes else None,
    )
    if not writes:
        return None
    log.info("held-out accuracy %s training: %.3f (%d/%d)", phase, acc.value, acc.correct, acc.total)
    return acc


def _engine(trainer: Trainer) -> str:
    if trainer.is_deepspeed_enabled:
        plugin = trainer.accelerator.state.deepspeed_plugin
        zero = plugin.deepspeed_config.get("zero_optimization", {})
        offloaded = [k.split("_")[1] for k in ("offload_optimizer", "offload_param")
                     if zero.get(k, {}).get("device", "none") != "none"]
        return f"deepspeed-zero{plugin.zero_stage}" + (f"+offload-{'-'.join(offloaded)}" if offloaded else "")
    return "ddp" if trainer.args.world_size > 1 else "single"


def _deepspeed_config(plan: RunPlan) -> str | None:
    path = plan.ds_config
    if path is None:
        return None
    if plan.cfg.hw.device == Device.cpu:
        import deepspeed

        warn_stale_build_locks()  # init_distributed builds DeepSpeed's CPU all-reduce on first use
        # DeepSpeed would look for oneCCL on CPU; gloo it is, set before TrainingArguments reads the backend.
        deepspeed.init_distributed(dist_backend="gloo", timeout=timedelta(seconds=plan.cfg.hw.collective_timeout_s))
    return str(path)


def _train_runtime(trainer: Trainer, fallback: float) -> float:
    for entry in reversed(trainer.state.log_history):
        if "train_runtime" in entry:
            return float(entry["train_runtime"])
    return fallback


def _report(summary: dict[str, Any]) -> None:
    before, after = summary["accuracy_before"], summary["accuracy_after"]
    lines = [f"{summary['stage']} finished: {summary['steps']} steps in {summary['wall_time_s']:.0f} s "
             f"({summary['seconds_per_step']:.2f} s/step)"]
    if before is not None and after is not None:
        lines.append(f"held-out accuracy: {before:.1%} before -> {after:.1%} after "
                     f"({summary['eval_problems']} problems)")
    lines.append(f"model: {summary['final_dir']}")
    log.info("\n".join(lines))
