"""The GRPO trainer: TRL's GRPOTrainer plus our speed and memory levers, one leaf over TRL's class.

It overrides only the seams the levers need, and each seam hands over to a lever module of its own; every lever
gives TRL's numbers (same distribution where it samples; tests/train/levers/ compare with TRL's own path):

| seam (TRL's)                            | levers                                                              |
|-----------------------------------------|---------------------------------------------------------------------|
| `_generate_single_turn` (one generation) | bf16_frozen, merged_lora, packed_linears, fast_sampling, prefill_once, |
|                                          | compact_decoding                                                    |
| `_generate` (one rollout batch, all turns) | turn_reuse: prefill_once in tool runs keeps each turn's cache      |
| `compute_loss` (a training micro-batch)  | trim_padding                                                        |
| `_prepare_inputs` (micro-batch split)    | shared_prefix: whole groups per micro-batch                         |
| `_get_per_token_logps_and_entropies`     | shared_prefix: each prompt forwarded once per group                 |
| `_generate_and_score_completions`        | zero_std_groups: groups labelled, resample refills the batch        |
| `_calculate_rewards`                     | zero_std_groups: the rewards that tell which groups teach nothing    |

Which levers apply is decided once, when the trainer is built (`GRPOLevers.applicable`): vLLM generation skips the
generation levers, ZeRO-3 skips the merge (a rank holds a shard of each weight) and the shared prefill. Runs with
tools (TRL's multi-turn loop) keep the levers that score or sample the same tokens whatever they are -- the shared
prefix (exact with TRL's tool_mask: tests/train/levers/test_tool_mask.py), prefill_once (generate's own tokens on a
follow-up turn's batch: test_prefill_tool_turns.py; each turn continues the last one's cache: test_turn_reuse.py),
merged LoRA, fast sampling, the lean LM head, trimmed padding --
and turn off drop_finished_rows, whose own decode loop is not proven on the follow-up turns TRL generates from each
rollout's history; one log line says so.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from trl import GRPOTrainer

from pipeline.train.levers.bf16_frozen import bf16_sampling, full_precision, holds_bf16
from pipeline.train.levers.compact_decoding import drop_finished_rows
from pipeline.train.levers.fast_sampling import inverse_cdf_sampling
from pipeline.train.levers.merged_lora import mergeable, merged_lora
from pipeline.train.levers.packed_linears import packed_linears
from pipeline.train.levers.prefill_once import prefill_once
from pipeline.train.levers.shared_prefix import SaysOnce, blocker, group_micro_batches, packed_logps, regroup_blocker
from pipeline.train.levers.trim_padding import trim_padding
from pipeline.train.levers.turn_reuse import TurnReuse
from pipeline.train.levers.zero_std_groups import (
    GROUP_KEY,
    SCALE_KEY,
    GroupStats,
    concat_outputs,
    fill_groups,
    group_labels,
    skip_rows,
    zero_std_rows,
)
from pipeline.train.runtime.fsdp2 import is_fsdp2
from pipeline.train.trl_surface import reached

log = logging.getLogger(__name__)
# Every run with tools passes environment_factory (plain tools too: pipeline/envs/limits.py's ToolBox), and TRL warns
# at each trainer that it is experimental: nothing a user can act on. Only that one message is ignored.
warnings.filterwarnings("ignore", message="You are using 'environment_factory', which is an experimental feature",
                        category=UserWarning)
# levers not proven in TRL's tool loop; off in tool runs (see the module docstring)
_OFF_WITH_TOOLS = ("drop_finished_rows",)

@dataclass(frozen=True)
class GRPOLevers:
    """Which levers a GRPO run asks for (hw.* and stage.* keys of the same names)."""

    merge_lora: bool = False
    fast_sampling: bool = False
    bf16_sampling: bool = False
    packed_linears: bool = False
    shared_prefix: bool = False
    prefill_once: bool = False
    drop_finished_rows: bool = False
    # keep | skip | resample groups whose completions all got one reward (levers/zero_std_groups.py)
    zero_std_groups: str = "keep"
    resample_tries: int = 0

    def applicable(self, trainer: GRPOTrainer) -> GRPOLevers:
        """The levers that can run under this trainer's setup (generation engine, ZeRO stage, adapter)."""
        transformers_generation = not trainer.use_vllm
        zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
        model = trainer.accelerator.unwrap_model(trainer.model)
        # FSDP2 (zero=fsdp2): each rank holds shards too; merging LoRA into them or a prefill outside generate is not
        # proven there
        sharded = zero3 or is_fsdp2(model)
        levers = self.without_row_layout_levers() if trainer.tools else self
        return dataclasses.replace(
            levers,
            merge_lora=levers.merge_lora and transformers_generation and mergeable(model, sharded),
            fast_sampling=levers.fast_sampling and transformers_generation,
            packed_linears=levers.packed_linears and transformers_generation and not sharded,
            # ZeRO-3 generates through gathered parameters of a wrapper the prefill would not go through
            prefill_once=levers.prefill_once and transformers_generation and not sharded,
            drop_finished_rows=levers.drop_finished_rows and transformers_generation,
        )

    def without_row_layout_levers(self) -> GRPOLevers:
        """The levers of a tool run: those in _OFF_WITH_TOOLS turned off, said in one log line when any was on."""
        asked = [name for name in _OFF_WITH_TOOLS if getattr(self, name)]
        if asked:
            log.info("tools: %s off for this run (its own decode loop is not proven on TRL's follow-up tool turns); "
                     "shared_prefix, prefill_once, merged LoRA, fast sampling and the lean LM head stay (they score "
                     "or sample every token alike; TRL's tool_mask then drops tool results from the loss)",
                     ", ".join(asked))
        return dataclasses.replace(self, **dict.fromkeys(_OFF_WITH_TOOLS, False))


class LeveredGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer whose generation, micro-batches and log-prob forwards go through the levers asked for."""

    def __init__(self, *args: Any, levers: GRPOLevers | None = None, tool_stats: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.levers = (levers or GRPOLevers()).applicable(self)
        self.says = SaysOnce("shared_prefix")
        # pipeline/envs/limits.py's per-tool counters (calls, failures, timeouts, truncated), logged with each step
        self.tool_stats = tool_stats
        # groups that teach nothing: counted (groups/* scalars, summary.json); fresh prompts drawn apart from TRL's
        self.groups, self.last_rewards, self.fresh_prompts = GroupStats(), None, None
        self._turns: TurnReuse | None = None  # the rollout batch being generated, in a tool run with prefill_once

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # each step's log, not evaluation's nor the end-of-training summary (which would repeat the last point)
        if self.model.training and "train_runtime" not in logs:
            if self.tool_stats is not None:
                logs = {**logs, **self.tool_stats.metrics()}
            if self.levers.zero_std_groups != "keep":
                logs = {**logs, **self.groups.metrics()}
        super().log(logs, start_time)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        reached["compute_loss"] += 1
        inputs = dict(inputs)  # the buffered micro-batch is reused when num_iterations > 1
        scale = inputs.pop(SCALE_KEY, None)
        loss = super().compute_loss(model, trim_padding(inputs), return_outputs, num_items_in_batch)
        # skipped groups: this micro-batch's share of the loss over the kept groups (levers/zero_std_groups.py)
        return loss if scale is None else loss * scale.to(loss.device)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.last_rewards = rewards  # every process's rows: groups may span processes
        return rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.levers.zero_std_groups == "keep" or not self.model.training:
            return output
        reached["_generate_and_score_completions"] += 1
        output = self._label_groups(output, len(inputs))
        return self._resample(output, len(inputs)) if self.levers.zero_std_groups == "resample" else output

    def _label_groups(self, output: dict[str, Any], rows: int) -> dict[str, Any]:
        reached["_calculate_rewards"] += 1
        zero = zero_std_rows(self.last_rewards, self.reward_weights, self.num_generations)
        start = self.accelerator.process_index * rows
        output[GROUP_KEY] = group_labels(zero, self.num_generations)[start:start + rows].to(self.accelerator.device)
        self.groups.add(zero_std=int(zero.sum()) // self.num_generations)
        return output

    def _resample(self, output: dict[str, Any], rows: int) -> dict[str, Any]:
        """Fresh prompts generated and scored until the batch has `rows // G` teaching groups (or the tries run
        out); the batch keeps its size, what is still missing is labelled to be skipped."""
        gens, outputs = self.num_generations, [output]
        wanted = rows // gens
        teaching = _teaching(output, gens)
        tries = 0
        while teaching < wanted and tries < self.levers.resample_tries:
            tries += 1
            extra = self._label_groups(super()._generate_and_score_completions(self._fresh_rows(wanted)), rows)
            outputs.append(extra)
            teaching += _teaching(extra, gens)
        joined = concat_outputs(outputs, self.processing_class.pad_token_id) if len(outputs) > 1 else output
        filled, taught = fill_groups(joined, gens, wanted)
        self.groups.add(resample_tries=tries, resampled=max(0, taught - _teaching(output, gens)))
        return filled

    def _fresh_rows(self, prompts: int) -> list[dict[str, Any]]:
        if self.fresh_prompts is None:  # its own seeded stream: TRL's sampler order is left as it is
            self.fresh_prompts = torch.Generator().manual_seed(self.args.seed + 1)
        picks = torch.randint(len(self.train_dataset), (prompts,), generator=self.fresh_prompts).tolist()
        return [self.train_dataset[i] for i in picks for _ in range(self.num_generations)]

    def _generate(self, prompts):
        reached["_generate"] += 1
        if not (self.tools and self.levers.prefill_once):
            return super()._generate(prompts)
        # one rollout batch, every turn of it: each turn forwards only what its rows gained (levers/turn_reuse.py)
        self._turns = TurnReuse(self.accelerator.unwrap_model(self.model))
        try:
            return super()._generate(prompts)
        finally:
            self._turns = None

    def _generate_single_turn(self, *args: Any, **kwargs: Any):
        reached["_generate_single_turn"] += 1
        with self._generation_levers():
            return super()._generate_single_turn(*args, **kwargs)

    def _generation_levers(self) -> ExitStack:
        stack, levers = ExitStack(), self.levers
        model = self.accelerator.unwrap_model(self.model)
        # bf16-held frozen weights (levers/bf16_frozen.py): sampling on them under autocast, the adapter unmerged --
        # the very numerics training scores the tokens with (a merge into bf16 weights rounds the adapter's update
        # away: 0.021 nats a token from training's log-probs, docs/benchmarks.md) -- or on the fp32 originals
        sampling_bf16 = levers.bf16_sampling and holds_bf16(model)
        stack.enter_context(bf16_sampling(model) if sampling_bf16 else full_precision(model))
        if levers.merge_lora and not sampling_bf16:
            stack.enter_context(merged_lora(model))
        if levers.packed_linears and not sampling_bf16:
            # after the merge: it packs the merged copies; autocast's calls (prefill_once's, in a bf16 run) as they were
            stack.enter_context(packed_linears(model, leave_autocast=True))
        if levers.fast_sampling:
            stack.enter_context(inverse_cdf_sampling())
        if self._turns is not None:  # a tool run: prefill_once's fresh prefill, then each turn continues the last
            stack.enter_context(self._turns.wrapping())
        elif levers.prefill_once:
            stack.enter_context(prefill_once(model))
        if levers.drop_finished_rows:
            # entered last, so its loop reaches generate through prefill_once's wrapper
            stack.enter_context(drop_finished_rows(model))
        return stack

    def _prepare_inputs(self, generation_batch):
        before = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        fresh = self.model.training and self._buffered_inputs is not before
        if fresh and self.levers.zero_std_groups != "keep":
            # whole groups per micro-batch already (shared_prefix has nothing to regroup)
            self._buffered_inputs = self._skip(self._buffered_inputs)
            return self._buffered_inputs[self._step % self.args.steps_per_generation]
        if not (self.levers.shared_prefix and fresh):
            return inputs
        reason = regroup_blocker(self, self._buffered_inputs)
        if reason is not None:
            self.says(reason, f"micro-batches keep TRL's shuffled rows ({reason})")
            return inputs
        reached["_prepare_inputs"] += 1
        self._buffered_inputs = group_micro_batches(self._buffered_inputs)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _skip(self, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        labels = torch.cat([chunk[GROUP_KEY] for chunk in chunks])
        gens = self.num_generations
        skipped_rows = int((labels < 0).sum())
        self.groups.add(skipped=round(skipped_rows / gens), trained=round((labels.numel() - skipped_rows) / gens))
        return skip_rows(chunks, self.loss_type, lambda n: self.accelerator.gather(n).sum())

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **extra):
        per_row = super()._get_per_token_logps_and_entropies
        reason = blocker(model, input_ids.device, compute_aux_loss, extra) if self.levers.shared_prefix else "off"
        if reason is not None:
            if reason != "off":
                self.says(reason, f"per-row forwards instead ({reason})")
            return per_row(model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                           compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **extra)
        logps, entropies = packed_logps(model, input_ids, attention_mask, logits_to_keep,
                                        batch_size or input_ids.size(0), compute_entropy, per_row,
                                        self.accelerator.autocast, self.says)
        return logps, entropies, None


def _teaching(output: dict[str, Any], gens: int) -> int:
    return int((output[GROUP_KEY] >= 0).sum()) // gens
