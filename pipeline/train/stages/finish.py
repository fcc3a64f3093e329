"""Training and what follows it in every stage: `trainer.train()` (resumed when asked, stopped cleanly by a signal),
then the final model, the held-out accuracy after training, summary.json and the closing report.

Each stage file keeps its own visible sequence (prepare -> build trainer -> train -> finish); `run_trl_stage` is
that sequence for the stages that are one TRL trainer with their own knobs and nothing else.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from transformers import Trainer

from pipeline.config.enums import Device
from pipeline.config.plan import RunPlan
from pipeline.config.run_dir import partial_of
from pipeline.data.predictions import write_predictions
from pipeline.train.checkpoint.disk import checkpoint_bytes, checkpoint_writes, needed_bytes, warn_if_short
from pipeline.train.checkpoint.fsdp2 import Fsdp2Checkpoint
from pipeline.train.checkpoint.resume import SignalCheckpoint, already_done, load_finished
from pipeline.train.checkpoint.saving import save_model_dir
from pipeline.train.levers.bf16_frozen import cpu_bf16, frozen_bf16, holds_frozen_bf16
from pipeline.train.levers.fp32_attention import fp32_attention
from pipeline.train.levers.lean_lm_head import lean_lm_head
from pipeline.train.levers.row_attention import row_attention
from pipeline.train.observe.console import console, end_block, install_console
from pipeline.train.observe.eval_callback import best_checkpoint
from pipeline.train.observe.heldout import stage_accuracy
from pipeline.train.observe.monitoring import best_metrics, final_metrics
from pipeline.train.observe.plots import plot_run
from pipeline.train.runtime.distributed import release_shared_memory_names
from pipeline.train.runtime.fsdp2 import is_fsdp2
from pipeline.train.stages.prepare import Prepared, prepare, trainer_inputs
from pipeline.train.stages.trl_args import trl_args

log = logging.getLogger(__name__)


def train(plan: RunPlan, trainer: Trainer, prep: Prepared, *, bf16_frozen: bool = False,
          padding_free: bool = False) -> None:
    """trainer.train(), resumed when asked; exits with 128+signal after a SIGTERM/SIGINT checkpoint. `bf16_frozen`:
    the trainer runs every training forward under autocast, so frozen weights may be held in bf16 (distill's
    loss calls the backbone outside it). `padding_free`: the batches are TRL's padding-free rows (SFT), attended
    one row at a time on CPU (the other stages' 4-D masks keep their own attention switches)."""
    cfg, run_dir = plan.cfg, plan.run_dir
    checkpoint = prep.checkpoint
    release_shared_memory_names()
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "bind"):
            callback.bind(trainer, prep.data.eval_prompts)
        if isinstance(callback, Fsdp2Checkpoint):  # FSDP2 loads its sharded optimizer state itself
            callback.checkpoint = checkpoint
    if already_done(checkpoint, cfg.max_steps):
        load_finished(trainer, checkpoint)
        return
    install_console(trainer, plan.dir.writes)  # one line per logging step instead of the Trainer's printed dict
    model_bytes, optimizer_bytes = checkpoint_bytes(trainer.model, prep.tokenizer)
    if plan.dir.writes:  # early, with the numbers: not at the first checkpoint, minutes or hours in
        warn_if_short(run_dir, needed_bytes(model_bytes, optimizer_bytes, cfg.stage.save_steps, cfg.max_steps,
                                            cfg.checkpoint.keep))
    with checkpoint_writes(run_dir, model_bytes + optimizer_bytes), lean_lm_head(cfg.hw.lean_lm_head), \
            frozen_bf16(trainer.model if bf16_frozen and holds_frozen_bf16(cfg) else None), \
            fp32_attention(trainer.model if cpu_bf16(cfg) else None), \
            row_attention(trainer.model if padding_free and cfg.hw.row_attention and cfg.hw.device == Device.cpu
                          else None):
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
    # final/ never holds half a model (pipeline.train.checkpoint.saving)
    with checkpoint_writes(run_dir, checkpoint_bytes(trainer.model, prep.tokenizer)[0], partial_of(plan.dir.final)):
        final = save_model_dir(plan.dir, trainer, prep.tokenizer, plan.dir.final)
    after = stage_accuracy(plan, trainer.model, prep.tokenizer, prep.data.eval_prompts, "after")
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
        console().info(end_block(summary, trainer.state.log_history, plan.stage.policy, evaluates=cfg.eval.heldout))
    return summary



def _engine(trainer: Trainer) -> str:
    if trainer.is_deepspeed_enabled:
        plugin = trainer.accelerator.state.deepspeed_plugin
        zero = plugin.deepspeed_config.get("zero_optimization", {})
        offloaded = [k.split("_")[1] for k in ("offload_optimizer", "offload_param")
                     if zero.get(k, {}).get("device", "none") != "none"]
        return f"deepspeed-zero{plugin.zero_stage}" + (f"+offload-{'-'.join(offloaded)}" if offloaded else "")
    if is_fsdp2(trainer.model):
        return "fsdp2"
    return "ddp" if trainer.args.world_size > 1 else "single"



def _train_runtime(trainer: Trainer, fallback: float) -> float:
    for entry in reversed(trainer.state.log_history):
        if "train_runtime" in entry:
            return float(entry["train_runtime"])
    return fallback
