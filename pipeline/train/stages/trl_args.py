"""What a stage hands its TRL trainer: the TrainingArguments shared by every TRL config (from our keys, so a
key means the same in every stage), the stage's own TRL keys on top, and the keyword arguments every trainer takes
the same way (model, data, tokenizer, LoRA config, our callbacks).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any

from transformers import TrainerCallback, TrainingArguments

from pipeline.config.derived import fsdp2, shards_weights
from pipeline.config.enums import Device, Precision, QuantMethod
from pipeline.config.frozen import thawed
from pipeline.config.peft_checks import MUTATING
from pipeline.config.plan import RunPlan
from pipeline.train.checkpoint.fsdp2 import Fsdp2Checkpoint
from pipeline.train.checkpoint.peft_init import InitialAdapter
from pipeline.train.checkpoint.resume import CheckpointCallback, SignalCheckpoint
from pipeline.train.model.sharded import QuantizedShare
from pipeline.train.observe.eval_callback import eval_callbacks
from pipeline.train.observe.health import health_family
from pipeline.train.observe.monitoring import CompletionsCallback, build_callbacks, wandb_env
from pipeline.train.runtime.distributed import warn_stale_build_locks
from pipeline.train.runtime.guards import NanGuard

log = logging.getLogger(__name__)


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
        # checkpoint/resume.py keeps the newest checkpoint.keep complete checkpoints (the Trainer's own rotation
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
        **_checkpointing(hw.gradient_checkpointing),
        # CUDA-only levers, refused elsewhere by validation (pipeline/config/gpu_levers.py)
        "use_liger_kernel": hw.liger_kernel,
        "tf32": True if hw.tf32 else None,
        # a rank waiting longer than this on a collective fails (runtime/distributed.py names it) instead of hanging
        "ddp_timeout": hw.collective_timeout_s,
        # the zero profile's JSON; its "auto" values are filled from the values above, so they cannot disagree
        "deepspeed": _deepspeed_config(plan),
        # FSDP2: the Trainer saves the weights, checkpoint/fsdp2.py the sharded optimizer state, schedule and RNG
        "save_only_model": fsdp2(cfg),
    }


def _checkpointing(on: bool) -> dict[str, Any]:
    """hw.gradient_checkpointing under the name this transformers knows: 5.x renamed it activation_checkpointing
    (the old name still works but warns FutureWarning on every run); older versions know only the old one."""
    kwargs = {"use_reentrant": False} if on else None
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        return {"activation_checkpointing": on, "activation_checkpointing_kwargs": kwargs}
    return {"gradient_checkpointing": on, "gradient_checkpointing_kwargs": kwargs}


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
    if fsdp2(cfg):  # before CheckpointCallback: its files are in the checkpoint before the marker is written
        found.insert(1, Fsdp2Checkpoint())
    if cfg.checkpoint.save_on_signal:
        found.append(SignalCheckpoint())
    if plan.ds_config is not None and cfg.zero.stage >= 3 and cfg.quant.method != QuantMethod.none:
        found.append(QuantizedShare())
    if cfg.peft.init in MUTATING:  # PiSSA / OLoRA: final/ is converted onto the original base from this
        found.append(InitialAdapter(plan.dir))
    if plan.dir.writes:
        found += build_callbacks(run_dir, cfg.logging, cfg.stage.batch_size, health_family(plan.stage))
        found += eval_callbacks(plan)
    elif shards_weights(cfg) and cfg.logging.samples_every > 0:
        # ZeRO-3/FSDP2: rank 0's sample generation gathers weights from every rank, so every rank must generate too.
        logging_cfg = cfg.logging
        found.append(CompletionsCallback(run_dir, None, logging_cfg.samples_every, logging_cfg.samples_shown,
                                         write=False))
    if not plan.dir.writes:
        # ZeRO-3: the other ranks join eval.every_steps' generation and best/'s gather (none otherwise).
        found += eval_callbacks(plan)
    return found


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
