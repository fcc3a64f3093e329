"""Stop on a non-finite loss before the optimizer applies it.

The Trainer only hides NaN/inf losses from its running average (`logging_nan_inf_filter`) and still steps the
optimizer with NaN gradients, which silently turns every weight into NaN. This callback runs between backward
and `optimizer.step()` and stops the run there, with the step number and the usual causes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pipeline.data.errors import DataError


class NonFiniteLossError(RuntimeError):
    """The loss (and so the gradients) became NaN or inf; the optimizer step was not taken."""


class NanGuard(TrainerCallback):
    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs.get("model")
        if model is None:
            return
        bad = _first_non_finite_grad(model)
        if bad is None:
            return
        step = state.global_step + 1
        raise NonFiniteLossError(
            f"step {step}: the loss is NaN/inf (first non-finite gradient: {bad}); stopped before the optimizer "
            f"step, so the weights are those after step {state.global_step}. Usual causes and fixes: learning rate "
            f"too high (lower stage.learning_rate), fp16 overflow (hw.precision=bf16 or fp32), an empty or "
            f"degenerate batch (check the data rows), or a model that is already NaN (resume from an earlier "
            f"checkpoint with resume=PATH)."
        )


@torch.no_grad()
def _first_non_finite_grad(model: torch.nn.Module) -> str | None:
    # One fused check first: the common (finite) case costs a single reduction per tensor, no Python per element.
    grads = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not grads:
        return None
    norms = torch.stack([g.detach().float().abs().sum() for _, g in grads])
    if torch.isfinite(norms).all():
        return None
    return grads[int((~torch.isfinite(norms)).nonzero()[0])][0]


# ---- rows longer than the stage's max_length --------------------------------------------------------------------


def row_lengths(rows: Any, tokenizer: Any) -> list[int]:
    """Tokens of each row as the trainer will see it (prompt + the longest completion/chosen/rejected)."""
    lengths = []
    for row in rows:
        answers = [row[k] for k in ("completion", "chosen", "rejected") if k in row] or [[]]
        tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else None
        lengths.append(max(_tokens(tokenizer, row["prompt"], answer, tools) for answer in answers))
    return lengths


def _tokens(tokenizer: Any, prompt: Any, completion: Any, tools: list | None = None) -> int:
    if isinstance(prompt, list):
        # the tool schemas are part of the rendered sequence (TRL renders them into the system turn)
        text = tokenizer.apply_chat_template(list(prompt) + list(completion or []), tools=tools, tokenize=False)
    else:
        text = str(prompt) + str(completion or "")
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def long_rows(rows: Any, tokenizer: Any, max_length: int, skip: bool, drops: Any) -> tuple[Any, int]:
    """Report (or, when skipping bad rows, drop and count) rows over `max_length` tokens: TRL truncates them
    silently. Returns (rows to train on, number of rows over the limit)."""
    lengths = row_lengths(rows, tokenizer)
    over = [i for i, n in enumerate(lengths) if n > max_length]
    if not over:
        return rows, 0
    first = over[0]
    fix = f"raise stage.max_length (longest row: {max(lengths)} tokens) or shorten those rows"
    if len(over) == len(lengths):
        # TRL would cut every completion off and drop every row: an empty run that fails far from the cause.
        raise DataError("training data", f"every training row is longer than stage.max_length={max_length} tokens "
                        f"(shortest: {min(lengths)})", fix, field=None)
    message = (f"{len(over)} of {len(rows)} training rows are longer than stage.max_length={max_length} tokens "
               f"(first: training row {first + 1}, {lengths[first]} tokens)")
    log = logging.getLogger(__name__)
    if not skip:
        log.warning("%s; TRL truncates them (their ends are not trained on; a row whose completion is cut off "
                    "entirely is dropped). Fix: %s, or "
                    "data.on_bad_row=skip to drop them.", message, fix)
        return rows, len(over)
    for i in over:
        drops.add(DataError(f"training row {i + 1}", f"{lengths[i]} tokens > stage.max_length={max_length}", fix,
                            reason=f"longer than stage.max_length={max_length}"))
    log.warning("%s: dropped (data.on_bad_row=skip). Fix: %s.", message, fix)
    keep = sorted(set(range(len(rows))) - set(over))
    return rows.select(keep), len(over)


# ---- model loading ------------------------------------------------------------------------------------------------


class ModelLoadError(RuntimeError):
    """The model or tokenizer could not be loaded; the message names model.path and the fix."""


def explain_load_error(name: str, path: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"model={name}: cannot load model.path={path} ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
        "Fix: a hub id needs network or the local hub cache (HF_HUB_OFFLINE=1 allows only cached models); a local "
        "path must be a folder with config.json and weights (a run's final/ or export/)."
    )
