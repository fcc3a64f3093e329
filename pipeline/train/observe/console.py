"""What a person watches during a run: one line per logging step, and a short block at the end.

The Trainer prints each log as a dict of ~30 metrics (PrinterCallback, or ProgressCallback's tqdm bar with the dict
written under it); ConsoleCallback replaces both with

    step 3/30 | loss 0.0412 | reward 0.250 (correctness 0.250) | entropy 1.23 | 3.04 s/step | ETA 1m21s | 704 tok/s

(each part only where the stage logs it), and `end_block` says what improved, where the model is and what to run
next. Every metric stays in TensorBoard and metrics.jsonl (monitoring.py). Lines go to stdout and run.log through
the `pipeline.console` logger, without the log-record prefix, so logging.level=warning silences them too.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainerState

# (logged key, label, format): the parts of a step's line after step/total, in order, where logged
PARTS = (
    ("loss", "loss", ".4g"),
    ("reward", "reward", ".3f"),
    ("rewards/accuracies", "pref acc", ".3f"),  # DPO-family: chosen scored over rejected
    ("rewards/margins", "margin", ".3g"),
    ("mean_token_accuracy", "token acc", ".3f"),  # SFT
    ("kl", "kl", ".3g"),
    ("entropy", "entropy", ".3g"),
)


def console() -> logging.Logger:
    """stdout without a prefix, plus the run's log files (Hydra's run.log) with theirs."""
    logger = logging.getLogger("pipeline.console")
    if not logger.handlers:
        plain = logging.StreamHandler(sys.stdout)
        plain.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(plain)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                logger.addHandler(handler)
        logger.propagate = False  # the root's console handler would print each line a second time
    return logger


def install_console(trainer: Trainer, writes: bool) -> None:
    """Our line instead of the Trainer's printed dict and progress bar; only the rank that writes prints."""
    for printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(printer)
    if writes:
        trainer.add_callback(ConsoleCallback())


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _terms(logs: dict[str, Any]) -> str:
    # GRPO logs each reward term as rewards/<term>/mean beside the weighted total `reward`
    terms = [(k.split("/")[1], v) for k, v in logs.items() if k.startswith("rewards/") and k.endswith("/mean")]
    return " (" + ", ".join(f"{name} {value:.3f}" for name, value in terms) + ")" if terms else ""


def step_line(logs: dict[str, Any], step: int, total: int, seconds_per_step: float | None, eta: float | None,
              tokens_per_s: float | None) -> str:
    parts = [f"step {step}/{total}" if total > 0 else f"step {step}"]
    for key, label, fmt in PARTS:
        value = logs.get(key)
        if isinstance(value, int | float):
            parts.append(f"{label} {value:{fmt}}" + (_terms(logs) if key == "reward" else ""))
    if seconds_per_step is not None:
        parts.append(f"{seconds_per_step:.2f} s/step")
    if eta is not None:
        parts.append(f"ETA {duration(eta)}")
    if tokens_per_s:
        parts.append(f"{tokens_per_s:,.0f} tok/s")
    return " | ".join(parts)


class ConsoleCallback(TrainerCallback):
    """One line per training log; one line per in-training evaluation; nothing for the Trainer's closing dict."""

    def __init__(self) -> None:
        self.log = console()
        self._begin: tuple[float, int] = (time.time(), 0)
        self._last: tuple[float, int, float] = (time.time(), 0, 0.0)

    def on_train_begin(self, args, state: TrainerState, control, **kwargs: Any) -> None:
        now = time.time()
        # after a resume global_step starts at the checkpoint's: time per step counts this process's steps only
        self._begin, self._last = (now, state.global_step), (now, state.global_step, 0.0)

    def on_log(self, args, state: TrainerState, control, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.log.info(self._train_line(logs, state))
        elif any(k.startswith("eval_") for k in logs):
            shown = [f"{k.removeprefix('eval_')} {v:.4g}" for k, v in logs.items()
                     if k.startswith("eval_") and isinstance(v, int | float) and "runtime" not in k
                     and "per_second" not in k][:6]
            self.log.info(" | ".join([f"eval at step {state.global_step}", *shown]))

    def _train_line(self, logs: dict[str, Any], state: TrainerState) -> str:
        now, step = time.time(), state.global_step
        last_time, last_step, last_tokens = self._last
        begin_time, begin_step = self._begin
        per_step = (now - last_time) / (step - last_step) if step > last_step else None
        average = (now - begin_time) / (step - begin_step) if step > begin_step else None
        eta = average * (state.max_steps - step) if average is not None and state.max_steps > 0 else None
        tokens = float(logs.get("num_tokens", 0.0) or 0.0)  # TRL's running count of tokens trained on
        rate = logs.get("perf/tokens_per_s")  # monitoring.MetricsCallback's, when the stage counts tokens
        if rate is None and tokens > last_tokens > 0 and now > last_time:
            rate = (tokens - last_tokens) / (now - last_time)
        self._last = (now, step, tokens)
        return step_line(logs, step, state.max_steps, per_step, eta, rate)


# ---- the end of a run -----------------------------------------------------------------------------------------


def _trend(history: list[dict[str, Any]]) -> str | None:
    """First -> last logged value of the stage's main training signal (GRPO's reward, a preference accuracy, the
    loss), as a hint of what moved when there is no held-out accuracy."""
    for key in ("reward", "rewards/accuracies", "loss"):
        seen = [(e["step"], e[key]) for e in history if isinstance(e.get(key), int | float) and "step" in e]
        if len(seen) >= 2:
            (s0, v0), (s1, v1) = seen[0], seen[-1]
            return f"{key}: {v0:.4g} (step {s0}) -> {v1:.4g} (step {s1})"
    return None


def end_block(summary: dict[str, Any], history: list[dict[str, Any]], generates: bool, evaluates: bool = True) -> str:
    """What improved, where the model is, what to run next (chat/serve for a model that generates; evaluate too
    unless the run has no held-out measure of its own: eval.heldout=false, a chain's step without the chain's tools)."""
    final = Path(summary["final_dir"])
    run_dir = final.parent
    lines = [f"== {summary['stage']} finished: {summary['steps']} steps in {duration(summary['wall_time_s'])} "
             f"({summary['seconds_per_step']:.2f} s/step) =="]
    before, after = summary.get("accuracy_before"), summary.get("accuracy_after")
    if before is not None and after is not None:
        lines.append(f"held-out accuracy: {before:.1%} -> {after:.1%} ({(after - before) * 100:+.1f} points, "
                     f"{summary['eval_problems']} problems)")
    trend = _trend(history)
    if trend:
        lines.append(trend)
    kind = "LoRA adapter" if (final / "adapter_config.json").is_file() else "full model"
    lines.append(f"model: {final} ({kind} on {summary['model']}; run dir {run_dir})")
    lines.append("next:")
    if generates:
        lines.append(f"  python -m pipeline.tools.chat {run_dir}        # talk to it")
        if evaluates:
            lines.append(f"  python -m pipeline.tools.evaluate {run_dir}    # held-out accuracy, base vs tuned")
        lines.append(f"  python -m pipeline.tools.serve {run_dir}       # an OpenAI-compatible server")
    lines.append(f"  python -m pipeline.tools.export {run_dir}      # one standalone model folder (format=gguf too)")
    return "\n".join(lines)
