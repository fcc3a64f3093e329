"""Offline group preference: learn from scored groups (prompt, responses[], scores[]) without generating.

For each group the top-scored response is chosen (y_c) and the lower-scored ones are rejected (Y_r). With the
DPO implicit reward r(y) = beta * (log pi(y|x) - log pi_ref(y|x)) (summed over the response tokens):

    hinge (listwise, the seed's derivation):  loss = max(0, max_{y in Y_r} r(y) - r(y_c) + alpha)
        smooth_lambda > 0 replaces the max by sum_y r(y) softmax(lambda * r)(y), whose gradient reaches every
        rejected response instead of only the strongest one;
    dpo_pairs (fallback):                      loss = mean_{y in Y_r} -log sigmoid(r(y_c) - r(y)).

At the start pi = pi_ref, every r is 0 and the hinge loss equals alpha. With LoRA the reference is the same
model with the adapter disabled; with full fine-tuning a frozen copy. No TRL trainer covers this, so a plain
transformers Trainer runs it with one named hook (`compute_loss`) plus `log` to add the reward metrics.

    python pipeline/run.py experiment=s1k_group_pref_qwen3_1.7b
    python pipeline/run.py stage=group_pref data=jsonl data.path=groups.jsonl model=tiny max_steps=5
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from pipeline.config.plan import RunPlan
from pipeline.train.model.templates import prompt_ids
from pipeline.train.stages.finish import finish, train
from pipeline.train.stages.prepare import prepare
from pipeline.train.stages.trl_args import callbacks, trl_args

log = logging.getLogger(__name__)


# ---- the loss -------------------------------------------------------------------------------------------------
def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """r(y) = beta * (log pi(y|x) - log pi_ref(y|x)), elementwise."""
    return beta * (policy_logps - ref_logps)


def strongest_rejected(rejected: torch.Tensor, mask: torch.Tensor, smooth_lambda: float | None) -> torch.Tensor:
    """Per group: max of the valid rejected rewards [G, K] (mask marks real responses), or its softmax smoothing."""
    masked = rejected.masked_fill(~mask, float("-inf"))
    if not smooth_lambda:
        return masked.max(dim=1).values
    weights = torch.softmax(smooth_lambda * masked, dim=1)
    return (weights * rejected.masked_fill(~mask, 0.0)).sum(dim=1)


def group_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss: str = "hinge",
    alpha: float = 1.0,
    smooth_lambda: float | None = None,
) -> torch.Tensor:
    """Per-group losses [G] from chosen rewards [G] and rejected rewards [G, K] (valid where mask)."""
    if loss == "hinge":
        return F.relu(strongest_rejected(rejected, mask, smooth_lambda) - chosen + alpha)
    if loss == "dpo_pairs":
        pair = -F.logsigmoid(chosen[:, None] - rejected) * mask
        return pair.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    raise ValueError(f"stage.loss={loss}: use hinge or dpo_pairs")


# ---- data: one row = one group, chosen first ------------------------------------------------------------------
def tokenize_group(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int,
                   max_responses: int) -> dict[str, Any]:
    """{input_ids: one token list per response (prompt + response + eos), prompt_len, cut: responses shortened}."""
    prompt = prompt_ids(tokenizer, row["prompt"])
    # Keep at least half the budget for the response: its tokens are what the loss scores.
    prompt = prompt[-(max_length // 2):]
    responses = [row["chosen"], *row["rejected"]][:max_responses]
    ids, cut = [], 0
    for response in responses:
        answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        cut += len(prompt) + len(answer) > max_length
        ids.append(prompt + answer[: max_length - len(prompt)])
    return {"input_ids": ids, "prompt_len": len(prompt), "cut": cut}


def collate_groups(features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Every response of every group as one right-padded batch, plus which group and slot each one fills."""
    seqs = [(g, k, ids, f["prompt_len"]) for g, f in enumerate(features) for k, ids in enumerate(f["input_ids"])]
    width = max(len(ids) for _, _, ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    scored = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (_, _, ids, prompt_len) in enumerate(seqs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        scored[i, prompt_len : len(ids)] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "response_mask": scored,
        "group": torch.tensor([g for g, _, _, _ in seqs]),
        "slot": torch.tensor([k for _, k, _, _ in seqs]),
    }


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log-probabilities of each sequence's response tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["input_ids"][:, 1:]
    token_logps = torch.gather(logits.log_softmax(-1), 2, labels[..., None]).squeeze(-1)
    return (token_logps * batch["response_mask"][:, 1:]).sum(-1)


def regroup(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat per-sequence values -> (chosen [G], rejected [G, K-1], mask [G, K-1])."""
    groups, slots = int(batch["group"].max()) + 1, int(batch["slot"].max()) + 1
    table = values.new_zeros((groups, max(slots, 2)))
    filled = torch.zeros_like(table, dtype=torch.bool)
    table[batch["group"], batch["slot"]] = values
    filled[batch["group"], batch["slot"]] = True
    return table[:, 0], table[:, 1:], filled[:, 1:]


# ---- trainer --------------------------------------------------------------------------------------------------
class GroupPrefTrainer(Trainer):
    def __init__(self, *args: Any, stage: Any, ref_model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.ref_model = ref_model.to(self.args.device) if ref_model is not None else None
        self._sums: dict[str, float] = {}
        self._count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy = sequence_logps(model, inputs)
        with torch.no_grad():
            if self.ref_model is not None:
                ref = sequence_logps(self.ref_model, inputs)
            else:  # LoRA: the base without the adapter is the reference
                with self.accelerator.unwrap_model(model).disable_adapter():
                    ref = sequence_logps(model, inputs)
        chosen, rejected, mask = regroup(implicit_rewards(policy, ref, self.stage.beta), inputs)
        losses = group_loss(chosen, rejected, mask, loss=self.stage.loss, alpha=self.stage.alpha,
                            smooth_lambda=self.stage.smooth_lambda)
        self._track(chosen.detach(), rejected.detach(), mask)
        loss = losses.mean()
        return (loss, {"losses": losses}) if return_outputs else loss

    def _track(self, chosen: torch.Tensor, rejected: torch.Tensor, mask: torch.Tensor) -> None:
        strongest = rejected.masked_fill(~mask, float("-inf")).max(dim=1).values
        for key, value in {
            "rewards/chosen": chosen.mean(),
            "rewards/rejected_max": strongest.mean(),
            "rewards/margin": (chosen - strongest).mean(),
            "rewards/accuracy": (chosen > strongest).float().mean(),
        }.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._count and "loss" in logs:
            logs.update({k: v / self._count for k, v in self._sums.items()})
            self._sums, self._count = {}, 0
        super().log(logs, *args, **kwargs)


def run_group_pref(plan: RunPlan) -> dict[str, Any]:
    cfg = plan.cfg
    prep = prepare(plan)
    stage, tokenizer = cfg.stage, prep.tokenizer
    # ---- model: a new LoRA adapter (reference = adapter off), or full weights against a frozen copy
    peft_config = prep.peft_config
    model, ref_model = prep.model, None
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    else:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    # ---- data: tokenised once; the collator pads per batch
    groups = prep.data.train.map(
        lambda row: tokenize_group(row, tokenizer, stage.max_length, stage.max_responses),
        remove_columns=prep.data.train.column_names,
    )
    cut = sum(groups["cut"])
    if cut:
        log.warning("%d responses are longer than stage.max_length=%d tokens with their prompt and were cut at the "
                    "end (their ends are not scored). Fix: raise stage.max_length.", cut, stage.max_length)
    args = TrainingArguments(**trl_args(plan, remove_unused_columns=False))
    trainer = GroupPrefTrainer(
        model=model,
        args=args,
        train_dataset=groups,
        data_collator=lambda features: collate_groups(features, tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks(plan),
        stage=stage,
        ref_model=ref_model,
    )
    # resumable like every stage (resume=auto continues from <run>/checkpoints)
    train(plan, trainer, prep)
    return finish(plan, trainer, prep)
