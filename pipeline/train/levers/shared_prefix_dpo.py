"""DPO forwards with each prompt computed once per pair (`stage.shared_prefix` of the DPO stage).

TRL's DPOTrainer scores a pair as two rows [prompt, chosen] and [prompt, rejected], so the prompt goes through the
policy twice per step and through the reference twice more. Here each pair becomes one packed row
[prompt, chosen, rejected] (`prefix_mask.pack_pairs`: the rejected branch's positions restart after the prompt and
it never sees the chosen tokens), and TRL's own `_compute_loss` / `compute_ref_log_probs` run unchanged: while they
run, the fused-LM-head forward TRL patched onto the policy (and the reference model) scores the packed rows instead
of the ones it was given and hands back every per-token output (log-probs, entropy, mean logits, top-1, WPO's
log-sum-sq) in the per-row layout TRL reads, zero where a row has no label. So every loss type, `ld_alpha`,
`use_weighting` and the logged metrics see the per-row numbers. The reference forward (adapter disabled under LoRA,
or the reference model) is packed the same way.

The per-row path stays where the layout does not apply, said once in the log: the GRPO reasons
(`shared_prefix.blocker`: images, MoE auxiliary loss, attention without a custom 4-D or block mask, sliding window,
devices other than CPU and CUDA), prompt-learning PEFT (virtual tokens shift the rows), or a batch not laid out as
[prompt, completion].

Exactness: with no dropout, the same numbers up to float summation order (fp32: ~1e-7,
tests/train/levers/test_shared_prefix_dpo.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer

from pipeline.train.levers.prefix_mask import PackedRows, pack_pairs
from pipeline.train.levers.shared_prefix import SaysOnce, attention_said, blocker, packed_inputs
from pipeline.train.trl_surface import reached

# batch keys TRL's DPO collator adds that are not model inputs; anything else (pixel_values ...) blocks the layout
_ROW_KEYS = {"input_ids", "attention_mask", "completion_mask", "ref_chosen_logps", "ref_rejected_logps"}


class SharedPrefixDPOTrainer(DPOTrainer):
    """DPOTrainer whose policy and reference forwards compute each prompt once per pair when `shared_prefix`."""

    def __init__(self, *args: Any, shared_prefix: bool = False, **kwargs: Any) -> None:
        # before TRL's __init__: precompute_ref_log_probs scores the reference from there
        self.shared_prefix = shared_prefix
        self.says = SaysOnce("shared_prefix")
        super().__init__(*args, **kwargs)

    def _compute_loss(self, model, inputs, return_outputs):
        reached["DPOTrainer._compute_loss"] += 1
        with self._packed(inputs):
            return super()._compute_loss(model, inputs, return_outputs)

    def compute_ref_log_probs(self, model, inputs):
        with self._packed(inputs):
            return super().compute_ref_log_probs(model, inputs)

    @contextmanager
    def _packed(self, inputs: dict[str, Any]) -> Iterator[None]:
        if not self.shared_prefix:
            yield
            return
        scorers = self._scorers()
        reason = self._blocker(scorers, inputs)
        rows = inputs["input_ids"]
        packed = None if reason else pack_pairs(rows, inputs["attention_mask"], inputs["completion_mask"])
        if packed is None:
            reason = reason or "a row is not [prompt, completion, padding]"
            self.says(reason, f"per-row forwards instead ({reason})")
            yield
            return
        num, size = packed.input_ids.shape
        self.says("packed", f"each prompt forwarded once per pair ({len(rows)} rows -> {num} packed rows of "
                           f"{size} tokens in the first such forward), {attention_said(scorers[0], rows.device)}")
        with _rerouted(scorers, rows, packed):
            yield

    def _scorers(self) -> list[torch.nn.Module]:
        """The modules TRL gave a fused LM head: the policy (under its PEFT wrapper) and the reference model."""
        policy = self.accelerator.unwrap_model(self.model)
        scorers = [policy.get_base_model() if is_peft_model(policy) else policy]
        if self.ref_model is not None:
            scorers.append(self.accelerator.unwrap_model(self.ref_model))
        return scorers

    def _blocker(self, scorers: list[torch.nn.Module], inputs: dict[str, Any]) -> str | None:
        policy = self.accelerator.unwrap_model(self.model)
        if is_peft_model(policy) and policy.active_peft_config.is_prompt_learning:
            return "prompt-learning PEFT prepends virtual tokens to every row"
        extra = {key: value for key, value in inputs.items() if key not in _ROW_KEYS}
        device = inputs["input_ids"].device
        return next((reason for scorer in scorers
                     if (reason := blocker(scorer, device, self.aux_loss_enabled, extra)) is not None), None)


@contextmanager
def _rerouted(modules: list[torch.nn.Module], rows: torch.Tensor, packed: PackedRows) -> Iterator[None]:
    """While inside, a fused-LM-head forward of any of `modules` on `rows` runs once on the packed rows and returns
    its per-token outputs in the per-row (B, L - 1) layout, as the forward would have on `rows`."""
    saved = [(module, module.__dict__.get("forward")) for module in modules]
    for module, _ in saved:
        original = module.forward

        def forward(*args: Any, _original: Any = original, _module: torch.nn.Module = module, **kwargs: Any) -> Any:
            if args or not kwargs.get("fused_lm_head") or kwargs.get("input_ids") is not rows:
                return _original(*args, **kwargs)  # another call (generation, eval logits): untouched
            reached["packed DPO forward"] += 1
            rest = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "labels")}
            outputs = _original(**rest, **packed_inputs(_module, packed))
            # per-token fields are (rows, positions); loss and aux_loss are scalars and stay as they are
            return type(outputs)(**{k: packed.unpack(v) if v.ndim == 2 else v for k, v in outputs.items()})

        module.forward = forward
    try:
        yield
    finally:
        for module, original in saved:
            if original is None:
                del module.forward
            else:
                module.forward = original
