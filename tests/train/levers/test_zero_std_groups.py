"""Groups that teach nothing: skipping them gives TRL's own loss (and gradients) over the other groups alone, for
each loss type's normaliser; resampling refills the batch with fresh prompts, bounded and counted."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, Qwen3ForCausalLM
from trl import GRPOConfig, GRPOTrainer

from pipeline.train import trl_surface
from pipeline.train.levers.grpo_trainer import GRPOLevers, LeveredGRPOTrainer
from pipeline.train.levers.zero_std_groups import GROUP_KEY, SCALE_KEY, skip_rows, zero_std_rows
from tests.helpers.tiny_models import TOKENIZER, tiny_config

GENS, GROUPS, PROMPT, COMPLETION = 4, 4, 5, 6


def generation_batch(kept: list[int], vocab: int) -> dict:
    """What TRL's generation of 4 groups x 4 completions returns, with uneven lengths and old log-probs (so ratios
    clip); groups not in `kept` have zero advantage and are labelled -1."""
    g = torch.Generator().manual_seed(3)
    rows = GENS * GROUPS
    prompt_mask = (torch.arange(PROMPT).flip(0).unsqueeze(0) < torch.randint(2, PROMPT + 1, (rows, 1), generator=g))
    completion_mask = torch.arange(COMPLETION).unsqueeze(0) < torch.randint(1, COMPLETION + 1, (rows, 1), generator=g)
    group = torch.arange(rows) // GENS
    advantages = torch.randn(rows, generator=g)
    teaching = torch.isin(group, torch.tensor(kept))
    return {
        "prompt_ids": torch.randint(3, vocab, (rows, PROMPT), generator=g) * prompt_mask,
        "prompt_mask": prompt_mask.long(),
        "completion_ids": torch.randint(3, vocab, (rows, COMPLETION), generator=g) * completion_mask,
        "completion_mask": completion_mask.long(),
        "old_per_token_logps": -torch.rand(rows, COMPLETION, generator=g) * 8,
        "advantages": torch.where(teaching, advantages, torch.zeros_like(advantages)),
        "num_items_in_batch": completion_mask.sum(),
        GROUP_KEY: torch.where(teaching, group, torch.full_like(group, -1)),
    }


def _trainer(cls: type, model: torch.nn.Module, tokenizer, tmp_path, batch: int, accumulation: int, **levers):
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=batch,
                      gradient_accumulation_steps=accumulation, num_generations=GENS,
                      max_completion_length=COMPLETION, report_to="none", max_steps=1)
    extra = {"levers": GRPOLevers(**levers)} if levers else {}
    return cls(model=model, args=args, processing_class=tokenizer, reward_funcs=lambda completions, **_: [0.0] *
               len(completions), train_dataset=Dataset.from_list([{"prompt": "1+1="}] * 16), **extra)


def _loss_and_grads(model, losses) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    total = sum(losses())
    total.backward()
    return total.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
@pytest.mark.parametrize("kept", [[0, 1, 3], [2]], ids=["uneven-split", "one-group-and-an-empty-micro-batch"])
def test_skip_gives_trls_loss_over_the_other_groups_alone(tmp_path, loss_type: str, kept: list[int]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(tiny_config(len(tokenizer))).train()
    # ours: the 16 rows in 2 micro-batches of 8 (TRL's shuffled split), skipped groups out
    ours = _trainer(LeveredGRPOTrainer, model, tokenizer, tmp_path / "ours", 8, 2, zero_std_groups="skip")
    # TRL's: one micro-batch holding only the kept groups
    theirs = _trainer(GRPOTrainer, model, tokenizer, tmp_path / "theirs", GENS * len(kept), 1)
    for trainer, accumulation in ((ours, 2), (theirs, 1)):
        trainer.loss_type = loss_type
        trainer.current_gradient_accumulation_steps = accumulation  # set by Trainer.train() around each step
    batch = generation_batch(kept, len(tokenizer))
    shuffle = torch.randperm(16, generator=torch.Generator().manual_seed(5))
    chunks = [{k: v if v.ndim == 0 else v[shuffle[i * 8:(i + 1) * 8]] for k, v in batch.items()} for i in range(2)]
    micro_batches = skip_rows(chunks, loss_type)
    assert len(micro_batches) == 2 and all(GROUP_KEY not in m for m in micro_batches)
    # TRL's batch: the kept rows in the order ours trains them (float sums then add up in the same order)
    rows = torch.cat([m["advantages"] for m in micro_batches if m[SCALE_KEY] > 0])
    order = [int((batch["advantages"] == a).nonzero()) for a in rows]
    only_kept = {k: v if v.ndim == 0 else v[order] for k, v in batch.items() if k != GROUP_KEY}
    only_kept["num_items_in_batch"] = only_kept["completion_mask"].sum()
    loss, grads = _loss_and_grads(model, lambda: [ours.compute_loss(model, m) for m in micro_batches])
    expected, expected_grads = _loss_and_grads(model, lambda: [GRPOTrainer.compute_loss(theirs, model, only_kept)])
    assert expected != 0
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)  # two forwards vs one: float order


def test_a_batch_with_no_teaching_group_trains_nothing(tmp_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    model = Qwen3ForCausalLM(tiny_config(len(tokenizer))).train()
    trainer = _trainer(LeveredGRPOTrainer, model, tokenizer, tmp_path, 8, 2, zero_std_groups="skip")
    trainer.current_gradient_accumulation_steps = 2
    batch = generation_batch([], len(tokenizer))
    micro_batches = skip_rows([{k: v if v.ndim == 0 else v[i * 8:(i + 1) * 8] for k, v in batch.items()}
                               for i in range(2)], "dapo")
    assert [len(m["advantages"]) for m in micro_batches] == [1, 1]  # one row each, not 8, its loss scaled by 0
    assert [float(m[SCALE_KEY]) for m in micro_batches] == [0.0, 0.0]
    loss, grads = _loss_and_grads(model, lambda: [trainer.compute_loss(model, m) for m in micro_batches])
    assert loss == 0 and all(not g.any() for g in grads)


def test_zero_std_rows_follow_trls_own_test() -> None:
    nan = float("nan")
    # groups of 2: equal rewards; different; equal weighted totals from different terms; one unscorable row
    per_func = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0],
                             [0.5, 0.5], [nan, nan]])
    zero = zero_std_rows(per_func, torch.tensor([2.0, 1.0]), 2)
    assert zero.tolist() == [True, True, False, False, True, True, True, True]


def _run(tmp_path, mode: str, reward, prompts: list[str], steps: int = 2) -> LeveredGRPOTrainer:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=4, report_to="none", max_steps=steps, logging_steps=1, seed=7)
    trainer = LeveredGRPOTrainer(
        model=Qwen3ForCausalLM(tiny_config(len(tokenizer))), args=args, processing_class=tokenizer,
        reward_funcs=reward, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        levers=GRPOLevers(zero_std_groups=mode, resample_tries=3))
    trainer.train()
    return trainer


def test_skip_in_training_logs_the_skipped_groups(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("pipeline.train.levers.grpo_trainer.reached", trl_surface.Counter())
    trainer = _run(tmp_path, "skip", lambda completions, **_: [1.0] * len(completions), ["1+1="] * 8)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["groups/skipped"] for entry in logs] == [2.0, 2.0]
    assert all(entry["groups/trained"] == 0 and entry["loss"] == 0 for entry in logs)
    assert trainer.groups.summary() == {"zero_std": 4, "skipped": 4, "resample_tries": 0, "resampled": 0,
                                        "trained": 0}


def test_resample_refills_the_batch_from_fresh_prompts_within_its_tries(tmp_path, monkeypatch) -> None:
    from pipeline.train.levers import grpo_trainer

    monkeypatch.setattr(grpo_trainer, "reached", trl_surface.Counter())
    seen: list[str] = []

    def reward(prompts, completions, **_):  # a "vary" prompt's completions get 0, 1, ...; any other prompt 1.0
        seen.extend(prompts)
        return [float(i) if "vary" in str(p) else 1.0 for i, p in enumerate(prompts)]

    trainer = _run(tmp_path, "resample", reward, ["same"] * 14 + ["vary"] * 2, steps=3)
    counts = trainer.groups.summary()
    assert 1 <= counts["resample_tries"] <= 3 * 3  # at most resample_tries per batch
    assert counts["resampled"] >= 1 and counts["trained"] + counts["skipped"] == 3 * 2
    # each try generated 2 fresh prompts x 2 completions beyond TRL's own 3 batches
    assert len(seen) == (3 + counts["resample_tries"]) * 4
    assert grpo_trainer.reached["_generate_and_score_completions"] == 3
    assert grpo_trainer.reached["_calculate_rewards"] == 3 + counts["resample_tries"]
    assert "groups/resample_tries" in trainer.state.log_history[0]
