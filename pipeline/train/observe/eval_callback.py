"""Held-out evaluation inside the run (eval.every_steps=N) and the kept best model (<run>/best/).

Every N optimizer steps: greedy accuracy on the first eval.limit held-out problems; with eval.samples=k also
pass@k and maj@k from k sampled completions each; for a stage trained on rewards (GRPO) the mean of every reward
term on the greedy completions; for a stage whose trainer has a loss to evaluate (SFT, DPO: `evaluates_loss` in the
stage table) the Trainer's own evaluate() on the held-out rows in the training shape (eval/loss, and e.g. DPO's
eval/rewards/accuracies). The numbers go through the Trainer's own log as eval_<name>, so TensorBoard shows
eval/<name> (transformers' naming) and metrics.jsonl / summary.json store eval/<name>.
When checkpoint.best_metric improves (default: eval/accuracy when the data has answers, else eval/loss), the model
(adapter) and tokenizer of that step replace <run>/best/ by a rename, with best.json naming the step: best/ is never
half a model.

Several ranks: evaluate() shards the held-out rows over the ranks, and under ZeRO-3 each generation gathers the
partitioned weights, so in those cases every rank runs this callback; rank 0's numbers decide (broadcast), every
rank takes part in saving best/, rank 0 alone writes. Otherwise only rank 0 evaluates.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from pipeline.config.derived import shards_weights
from pipeline.config.plan import RunPlan
from pipeline.rewards import build_reward_funcs, place_reward_models, score_completions
from pipeline.train.checkpoint.saving import save_model_dir
from pipeline.train.observe.episodes import eval_agent
from pipeline.train.observe.heldout import heldout_records
from pipeline.train.observe.pass_at_k import maj_at_k, pass_at_k

log = logging.getLogger(__name__)
BEST_NOTE = "best.json"
# Generated tokens per evaluation above which the run warns before starting (≈ minutes on a CPU).
_SLOW_TOKENS = 50_000


def partitioned(plan: RunPlan) -> bool:
    """ZeRO-3 or FSDP2 over several ranks: generation needs every rank."""
    return shards_weights(plan.cfg)


def every_rank(plan: RunPlan) -> bool:
    """Whether all ranks run the evaluation: ZeRO-3 generation, or evaluate() sharding rows over ranks."""
    return partitioned(plan) or (plan.world_size > 1 and plan.stage.evaluates_loss)


def eval_callbacks(plan: RunPlan) -> list[TrainerCallback]:
    if plan.cfg.eval.every_steps <= 0 or not (plan.dir.writes or every_rank(plan)):
        return []
    return [EvalCallback(plan)]


def loss_rows(plan: RunPlan, rows: Any) -> Any:
    """The held-out rows the Trainer evaluates the loss on (the first eval.limit), or None when not evaluating."""
    if plan.cfg.eval.every_steps <= 0 or not plan.stage.evaluates_loss or rows is None or not len(rows):
        return None
    limit = plan.cfg.eval.limit
    return rows.select(range(min(limit, len(rows)))) if limit else rows


def best_metric(plan: RunPlan, has_answers: bool = True) -> tuple[str, str]:
    """(metric name, max|min): checkpoint.best_metric, else eval/accuracy with answers and eval/loss without;
    the mode from its name unless given."""
    name = plan.cfg.checkpoint.best_metric or ("eval/accuracy" if has_answers else "eval/loss")
    return name, plan.cfg.checkpoint.best_mode or ("min" if "loss" in name else "max")


class EvalCallback(TrainerCallback):
    def __init__(self, plan: RunPlan) -> None:
        self.plan, self.every = plan, plan.cfg.eval.every_steps
        self.metric, self.mode = best_metric(plan)
        self.trainer: Trainer | None = None
        self.problems = None
        # the Trainer evaluates its loss on trainer.eval_dataset (SFT, DPO with held-out rows)
        self.loss = False
        # {step, metric, value} of best/, once one is kept
        self.best: dict[str, Any] | None = None
        self.rewards = build_reward_funcs(plan.cfg.reward.terms) if plan.stage.rewards else ([], [])
        # the run's tools, played as its rollouts play them (episodes.py); None: single-turn
        self.agent = None

    def bind(self, trainer: Trainer, eval_prompts: Any) -> None:
        self.trainer = trainer
        place_reward_models(self.rewards[0], trainer.accelerator.device)  # the training RM's device: loaded once
        ev, stage = self.plan.cfg.eval, self.plan.cfg.stage
        self.loss = trainer.eval_dataset is not None
        has_answers = eval_prompts is not None and len(eval_prompts) > 0
        self.metric, self.mode = best_metric(self.plan, has_answers)
        if self.loss:
            log.info("evaluating the loss every %d steps on %d held-out rows", self.every, len(trainer.eval_dataset))
        if not has_answers:
            if not self.loss:
                loss = "" if self.plan.stage.evaluates_loss else f" (stage {stage.name} has no eval loss)"
                log.warning("eval.every_steps=%d but data=%s has no held-out rows%s: nothing is evaluated during "
                            "training and no best/ is kept; hold rows out with data.eval_size=N or data.eval_path",
                            self.every, self.plan.cfg.data.name, loss)
            return
        self.problems = eval_prompts.select(range(min(ev.limit or len(eval_prompts), len(eval_prompts))))
        self.agent = eval_agent(self.plan.cfg, trainer.processing_class)
        tokens = len(self.problems) * (1 + ev.samples) * stage.eval_max_new_tokens
        say = log.warning if tokens > _SLOW_TOKENS else log.info
        say("evaluating every %d steps: %d held-out problems x (1 greedy + %d sampled) x %d new tokens = up to %d "
            "generated tokens per evaluation%s", self.every, len(self.problems), ev.samples,
            stage.eval_max_new_tokens, tokens, "; lower eval.limit or stage.eval_max_new_tokens if that is too slow"
            if tokens > _SLOW_TOKENS else "")

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        # A resumed run keeps competing against the best/ it kept before the interruption.
        note = self.plan.dir.best / BEST_NOTE
        if state.global_step > 0 and note.is_file():
            self.best = json.loads(note.read_text())

    def on_step_end(self, args, state, control, **kwargs: Any) -> None:
        if self.trainer is None or state.global_step % self.every:
            return
        # Logging (here and inside evaluate()) clears control.should_log, which this step's training log (right
        # after) still needs.
        should_log = control.should_log
        metrics: dict[str, float] = {}
        if self.loss:
            # every rank (evaluate() gathers across them); it logs eval_loss etc. through the stage's own log
            found = self.trainer.evaluate(metric_key_prefix="eval")
            metrics.update({k.removeprefix("eval_"): v for k, v in found.items() if isinstance(v, (int, float))})
        if self.problems is not None:
            measured = self.measure() if (self.plan.dir.writes or partitioned(self.plan)) else {}
            measured = self._agreed(measured)
            if self.plan.dir.writes:
                # The base Trainer.log: a stage's own log (GRPO, DPO) would fold its pending training metrics in.
                Trainer.log(self.trainer, {f"eval_{name}": value for name, value in measured.items()})
            metrics.update(measured)
        control.should_log = should_log
        if metrics:
            self._keep_best(state.global_step, metrics)

    def measure(self) -> dict[str, float]:
        cfg = self.plan.cfg
        trainer, problems = self.trainer, self.problems
        records = heldout_records(trainer.model, trainer.processing_class, problems,
                                  max_new_tokens=cfg.stage.eval_max_new_tokens, batch_size=cfg.hw.eval_batch,
                                  samples=cfg.eval.samples, temperature=cfg.eval.temperature, agent=self.agent)
        metrics = {"accuracy": sum(r["correct"] for r in records) / len(records)}
        if self.agent is not None:  # eval/tool_calls, eval/turns per episode; eval/env_reward where it scores
            for key, name in (("tool_calls", "tool_calls"), ("turns", "turns"), ("reward", "env_reward")):
                values = [r[key] for r in records if key in r]
                if values:
                    metrics[name] = sum(values) / len(values)
        if cfg.eval.samples:
            sampled, golds, k = [r["sampled"] for r in records], [r["answer"] for r in records], cfg.eval.samples
            metrics[f"pass@{k}"], metrics[f"maj@{k}"] = pass_at_k(sampled, golds), maj_at_k(sampled, golds)
        funcs, weights = self.rewards
        if funcs:
            columns = {c: problems[c] for c in problems.column_names if c != "prompt"}
            per_term, totals = score_completions(funcs, weights, problems["prompt"],
                                                 [r["completion"] for r in records], columns)
            for term, scores in per_term.items():
                valid = [s for s in scores if s is not None]
                metrics[term] = sum(valid) / len(valid) if valid else 0.0
            metrics["reward"] = sum(totals) / len(totals)
        return metrics

    def _agreed(self, metrics: dict[str, float]) -> dict[str, float]:
        # Rank 0's numbers decide (under ZeRO-3 sampled completions differ per rank; otherwise only rank 0
        # measured), so every rank saves best/ at the same steps (a rank that skipped the save would hang the others).
        if not every_rank(self.plan):
            return metrics
        box = [metrics]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def _keep_best(self, step: int, metrics: dict[str, float]) -> None:
        name = self.metric.removeprefix("eval/")
        if name not in metrics:
            if self.best is None and step == self.every:
                log.warning("checkpoint.best_metric=%s is not measured (measured: %s): no best/ is kept.",
                            self.metric, ", ".join(f"eval/{m}" for m in metrics))
            return
        value = metrics[name]
        if self.best is not None:
            kept = self.best["value"]
            if (value <= kept) if self.mode == "max" else (value >= kept):
                return
        record = {"step": step, "metric": self.metric, "value": value}
        save_model_dir(self.plan.dir, self.trainer, self.trainer.processing_class, self.plan.dir.best,
                       note=(BEST_NOTE, record))
        self.best = record
        log.info("best %s=%.4f at step %d: saved %s", self.metric, value, step, self.plan.dir.best)


def best_checkpoint(trainer: Trainer) -> dict[str, Any] | None:
    """{step, metric, value} of the kept best/, or None (no evaluation during training, nothing measured)."""
    found = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EvalCallback)), None)
    return found.best if found is not None else None
