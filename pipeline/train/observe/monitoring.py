"""What a run leaves behind for people: TensorBoard events in <run>/tb (scalars and completions as text),
<run>/metrics.jsonl, <run>/samples/completions.jsonl and summary.json."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerState
from transformers.integrations import TensorBoardCallback

from pipeline.config.run_dir import RunDir, finite
from pipeline.config.schema import LoggingConfig
from pipeline.rewards.answer import is_correct
from pipeline.train.observe.health import HealthCallback
from pipeline.train.observe.heldout import generate_greedy
from pipeline.train.observe.trajectories import episode_counts, is_trajectory, tool_calls, trajectory_text, turns
from pipeline.train.trl_surface import latest_completions


def tensorboard_callback(run_dir: Path) -> TrainerCallback:
    """TRL's own TensorBoard logging, pointed at <run>/tb (transformers 5 has no logging_dir argument)."""
    from torch.utils.tensorboard import SummaryWriter

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(RunDir(run_dir).tb)))


def metric_name(key: str) -> str:
    """The name a logged key is stored under: the Trainer's eval_<x> keys become eval/<x>, as TensorBoard shows
    them (transformers' TensorBoard callback rewrites them so)."""
    return "eval/" + key.removeprefix("eval_") if key.startswith("eval_") else key


def final_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """Last logged value of every numeric metric (the trainer logs step by step; later entries win)."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if isinstance(value, int | float) and key != "step":
                metrics[metric_name(key)] = float(value)
    return metrics


def best_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """Best value of each loss (lowest), reward, accuracy and eval/ metric (highest) over the logged steps."""
    best: dict[str, float] = {}
    for entry in log_history:
        for raw, value in entry.items():
            key = metric_name(raw)
            if not isinstance(value, int | float) or not math.isfinite(value) or key.endswith("std"):
                continue
            lower = "loss" in key
            if not (lower or "reward" in key or "accuracy" in key or key.startswith("eval/")):
                continue
            if key not in best or (value < best[key] if lower else value > best[key]):
                best[key] = float(value)
    return best


# ---- callbacks: metrics.jsonl + throughput/memory, TensorBoard, completions as text ------------------------------


def build_callbacks(run_dir: Path, logging: LoggingConfig, batch_size: int, health: str = "supervised",
                    ) -> list[TrainerCallback]:
    """Rank 0's monitoring callbacks, in the order they must run: metrics (health/* for the stage's family of signs,
    observe/health.py) are added to a log before metrics.jsonl and TensorBoard write it, and completions are logged
    with the same step."""
    tb = tensorboard_callback(run_dir) if "tensorboard" in logging.report_to else None
    found: list[TrainerCallback] = [HealthCallback(logging.health, health)] if logging.health.enabled else []
    found.append(MetricsCallback(run_dir, batch_size))
    if tb is not None:
        found.append(tb)
    if logging.samples_every > 0:
        writer = tb.tb_writer if tb is not None else None
        found.append(CompletionsCallback(run_dir, writer, logging.samples_every, logging.samples_shown))
    return found


class MetricsCallback(TrainerCallback):
    """Adds perf/samples_per_s, perf/tokens_per_s and perf/peak_memory_mb to each training log and appends every
    log to <run>/metrics.jsonl (what `python -m pipeline.tools.plot` reads)."""

    def __init__(self, run_dir: Path, batch_size: int) -> None:
        self.path, self.batch_size = RunDir(run_dir).metrics, batch_size
        self._mark: tuple[float, int, int] = (time.time(), 0, 0)

    def on_train_begin(self, args, state: TrainerState, control, **kwargs: Any) -> None:
        # After a resume the file may hold steps past the checkpoint (the killed run's); they are replayed now.
        kept = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= state.global_step]
        self.path.write_text("".join(json.dumps(finite(r)) + "\n" for r in kept))
        self._mark = (time.time(), state.global_step, state.num_input_tokens_seen)

    def on_log(self, args, state: TrainerState, control, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs is None:
            return
        now, step, tokens = time.time(), state.global_step, state.num_input_tokens_seen
        last_time, last_step, last_tokens = self._mark
        if "loss" in logs and step > last_step and now > last_time:
            extra = {"perf/samples_per_s": (step - last_step) * self.batch_size / (now - last_time),
                     "perf/peak_memory_mb": peak_memory_mb()}
            if tokens > last_tokens:
                extra["perf/tokens_per_s"] = (tokens - last_tokens) / (now - last_time)
            logs.update(extra)
            if state.log_history:
                state.log_history[-1].update(extra)
            self._mark = (now, step, tokens)
        with self.path.open("a") as f:
            f.write(json.dumps(finite({"step": step, **{metric_name(k): v for k, v in logs.items()}})) + "\n")


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    # Linux reports ru_maxrss in KiB: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class CompletionsCallback(TrainerCallback):
    """Every N steps: a few generated completions with each reward, as TensorBoard text and JSONL lines.

    GRPO: the completions the trainer just sampled (TRL keeps the latest generation batch for its console and
    wandb tables: `latest_completions`). SFT/DPO: greedy completions of the first held-out prompts.
    """

    def __init__(self, run_dir: Path, writer: Any, every: int, shown: int, write: bool = True) -> None:
        self.path = RunDir(run_dir).samples / "completions.jsonl"
        self.writer, self.every, self.shown = writer, every, shown
        self.eval_prompts, self.trainer = None, None
        # False on the other ranks of a ZeRO-3 run: they join rank 0's generation (each forward gathers the
        # partitioned weights from every rank) and write nothing.
        self.write = write

    def bind(self, trainer: Any, eval_prompts: Any) -> None:
        # The callback API hands over the model, not the trainer that holds GRPO's latest completions.
        self.trainer, self.eval_prompts = trainer, eval_prompts

    def on_log(self, args, state: TrainerState, control, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.trainer is None or "loss" not in (logs or {}):
            return
        sampled = latest_completions(self.trainer)
        if sampled is not None and self._tools() and self.write and self.writer is not None:
            for key, value in episode_counts(sampled["completion"]).items():
                self.writer.add_scalar(key, value, state.global_step)
        if state.global_step % self.every:
            return
        # a trainer that keeps no sampled batch (or an empty one: distillation without TRL's log_completions) gets
        # greedy completions of held-out prompts instead
        rows = self._sampled_rows(sampled) if sampled and len(sampled.get("prompt", ())) else self._greedy_rows()
        if not rows or not self.write:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            for row in rows:
                f.write(json.dumps(finite({"step": state.global_step, **row}), ensure_ascii=False) + "\n")
        if self.writer is not None:
            self.writer.add_text("completions", completions_markdown(rows), state.global_step)
            self.writer.flush()

    def _sampled_rows(self, logs: dict[str, Any]) -> list[dict[str, Any]]:
        n = min(self.shown, len(logs["prompt"]))
        # distillation's batch (stage.trl.log_completions=true) has no rewards or advantages
        rewards = {name: list(values) for name, values in logs.get("rewards", {}).items()}
        advantages = list(logs.get("advantages", []))
        rows = [
            {"prompt": _text(logs["prompt"][i]), "completion": _completion_text(logs["completion"][i]),
             "rewards": {name: values[i] for name, values in rewards.items() if i < len(values)},
             "advantage": advantages[i] if i < len(advantages) else None}
            for i in range(n)
        ]
        if self._tools():  # whole episodes: how many turns and calls each took
            for row, completion in zip(rows, logs["completion"], strict=False):
                if is_trajectory(completion):
                    row.update(turns=turns(completion), tool_calls=tool_calls(completion))
        return rows

    def _tools(self) -> bool:
        return bool(getattr(self.trainer, "tools", None))

    def _greedy_rows(self) -> list[dict[str, Any]]:
        if self.eval_prompts is None or not len(self.eval_prompts):
            return []
        rows = self.eval_prompts[: self.shown]
        model, tokenizer = self.trainer.model, self.trainer.processing_class
        completions = generate_greedy(model, tokenizer, rows["prompt"], max_new_tokens=32)
        return [{"prompt": _text(p), "completion": c, "rewards": {"correct": float(is_correct(c, a))}}
                for p, a, c in zip(rows["prompt"], rows["answer"], completions, strict=True)]


def completions_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table TensorBoard's Text tab renders: prompt | completion | one column per reward (and, in tool
    runs, the episode's turns and tool calls)."""
    names = sorted({name for row in rows for name in row["rewards"]})
    counts = [key for key in ("turns", "tool_calls") if any(key in row for row in rows)]
    columns = [*names, *counts]
    header = "| prompt | completion | " + " | ".join(columns) + " |\n|---|---|" + "---|" * len(columns) + "\n"
    body = "".join(
        f"| {_cell(r['prompt'])} | {_cell(r['completion'])} | "
        + " | ".join([*(_number(r["rewards"].get(n)) for n in names), *(_number(r.get(k)) for k in counts)])
        + " |\n"
        for r in rows
    )
    return header + body


def _text(value: Any) -> str:
    # Conversational prompts/completions are message lists; show the last turn's text.
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    return str(value)


def _completion_text(value: Any) -> str:
    # a multi-turn completion shows every turn: calls, marked tool results, the answer
    return trajectory_text(value) if is_trajectory(value) else _text(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _number(value: Any) -> str:
    return "" if value is None else f"{float(value):.3g}"


# ---- wandb (opt-in) -------------------------------------------------------------------------------------------


def wandb_env(logging: LoggingConfig, run_dir: Path) -> None:
    """Point wandb at the run dir and the configured mode. The API key is read by wandb itself from
    WANDB_API_KEY (or its own login); it never passes through our config, so it cannot land in .hydra/."""
    if "wandb" not in logging.report_to:
        return
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise RuntimeError("logging=wandb but the wandb package is not installed. Fix: pip install -e '.[wandb]', "
                           "or logging=tensorboard.")
    if logging.wandb_mode not in ("online", "offline"):
        raise ValueError(f"logging.wandb_mode={logging.wandb_mode}: use online or offline.")
    # The environment wins: WANDB_MODE=disabled in CI, or a site-wide WANDB_DIR, keep working.
    os.environ.setdefault("WANDB_MODE", logging.wandb_mode)
    os.environ.setdefault("WANDB_PROJECT", logging.wandb_project)
    os.environ.setdefault("WANDB_DIR", str(run_dir))
