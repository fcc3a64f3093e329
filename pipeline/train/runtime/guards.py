"""Stop on a non-finite loss before the optimizer applies it.

The Trainer only hides NaN/inf losses from its running average (`logging_nan_inf_filter`) and still steps the
optimizer with NaN gradients, which silently turns every weight into NaN. This callback runs between backward
and `optimizer.step()` and stops the run there, with the step number and the usual causes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pipeline.config.user_errors import UserError


class NonFiniteLossError(UserError, RuntimeError):
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
