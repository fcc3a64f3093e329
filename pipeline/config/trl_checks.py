"""Names checked against the installed TRL / transformers before anything loads: `stage.trl.<field>` pass-through
keys, and the scheduler and optimizer names (loss types, reward scaling and importance sampling are enums).

Without these, a typo fails only after the model has loaded (and, for GRPO, after a rollout has run).
"""

from __future__ import annotations

import difflib
from dataclasses import fields

from pipeline.config.schema import RunConfig
from pipeline.config.stage_table import stage_spec
from pipeline.config.trl_fields import config_fields, enum_values

# TRL / TrainingArguments fields that our own keys set (pipeline/train/stages/trl_args.py: training_args and the
# stage files); stage.trl may not set them, the message names the key to use. A field that has the same name as
# a key of the stage's schema (beta, max_length, loss_type ...) is owned by stage.<name> without being listed.
OWNED = {
    "output_dir": "output_dir",
    "per_device_train_batch_size": "stage.batch_size (global) and hw.micro_batch",
    "per_device_eval_batch_size": "hw.micro_batch (evaluation uses the training micro-batch)",
    "gradient_accumulation_steps": "stage.batch_size (global) and hw.micro_batch",
    "lr_scheduler_type": "stage.lr_scheduler",
    "warmup_steps": "stage.warmup_steps or stage.warmup_ratio",
    "warmup_ratio": "stage.warmup_ratio",
    "num_train_epochs": "stage.num_epochs",
    "max_steps": "max_steps",
    "save_strategy": "stage.save_steps",
    "save_steps": "stage.save_steps",
    "save_total_limit": "checkpoint.keep",
    # on under zero=fsdp2 (its optimizer state goes in our own torch distributed checkpoint)
    "save_only_model": "zero (fsdp2 sets it)",
    "include_num_input_tokens_seen": "the stage table (counts_tokens)",
    "report_to": "logging.report_to",
    "run_name": "run_id",
    "seed": "seed",
    "use_cpu": "hw.device",
    "bf16": "hw.precision",
    "fp16": "hw.precision",
    "gradient_checkpointing": "hw.gradient_checkpointing",
    "gradient_checkpointing_kwargs": "hw.gradient_checkpointing",
    # transformers 5's new names for the two above
    "activation_checkpointing": "hw.gradient_checkpointing",
    "activation_checkpointing_kwargs": "hw.gradient_checkpointing",
    # evaluation during training and <run>/best/ are ours (pipeline/train/observe/eval_callback.py)
    "eval_strategy": "eval.every_steps",
    "load_best_model_at_end": "checkpoint.best_metric",
    "metric_for_best_model": "checkpoint.best_metric",
    "use_liger_kernel": "hw.liger_kernel",
    "tf32": "hw.tf32",
    "ddp_timeout": "hw.collective_timeout_s",
    "deepspeed": "zero=<profile>",
    "resume_from_checkpoint": "resume",
    # GRPO
    "reward_weights": "reward.terms.<name>.weight",
    "use_transformers_continuous_batching": "hw.continuous_batching",
    "use_vllm": "stage.generation",
    "vllm_mode": "stage.generation",
    "max_tool_calling_iterations": "env.max_tool_calling_iterations",
    # distill: the teacher is built by us from stage.teacher (pipeline/train/model/teacher.py)
    "teacher_model_name_or_path": "stage.teacher",
    "teacher_model_init_kwargs": "stage.teacher",
    "teacher_model_revision": "stage.teacher",
    # SFT: padding-free is decided from stage.padding_free and the rows' lengths
    "padding_free": "stage.padding_free",
}
# transformers' names, read from its source (pipeline/config/trl_fields.py)
SCHEDULERS = "transformers.trainer_utils:SchedulerType"
OPTIMIZERS = "transformers.training_args:OptimizerNames"


def trl_problems(cfg: RunConfig) -> list[str]:
    """stage.trl keys that are not fields of the stage's TRL config, or that one of our keys owns."""
    stage, extra = cfg.stage, dict(cfg.stage.trl)
    if not extra:
        return []
    ref = stage_spec(stage.name).trl_config
    if ref is None:
        return [f"stage.trl={extra}: stage={stage.name} has no TRL config to pass fields to; remove stage.trl."]
    known = config_fields(ref)
    ours = {f.name for f in fields(type(stage))} - {"name", "trl"}
    cls = ref.rpartition(":")[2]
    problems = []
    for key in sorted(extra):
        if key in ours:
            problems.append(f"stage.trl.{key}: set by our key stage.{key}; use stage.{key}={extra[key]} instead.")
        elif key in OWNED:
            problems.append(f"stage.trl.{key}: set by our key {OWNED[key]}; use that instead.")
        elif key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            problems.append(f"stage.trl.{key}: {cls} (TRL installed here) has no field {key}.{hint} "
                            f"Its fields are listed in {ref.partition(':')[0].replace('.', '/')}.py.")
    return problems


def name_problems(cfg: RunConfig) -> list[str]:
    """stage.lr_scheduler and stage.optim are names transformers knows (listed in the message when not)."""
    problems = []
    for key, ref in (("lr_scheduler", SCHEDULERS), ("optim", OPTIMIZERS)):
        value = getattr(cfg.stage, key, None)
        if value is None:
            continue
        valid = enum_values(ref)
        if value not in valid:
            close = difflib.get_close_matches(str(value), valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"stage.{key}={value} is not a transformers {ref.rpartition(':')[2]}{hint}: use one of "
                            f"{', '.join(valid)}.")
    return problems
