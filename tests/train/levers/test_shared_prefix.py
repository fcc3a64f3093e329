"""Shared-prefix GRPO forwards (train/levers/shared_prefix.py, prefix_mask.py) give TRL's per-row numbers: log-probs,
entropies, TRL's own loss and its gradients, for LoRA and full fine-tuning, with and without the KL term (whose
reference forward shares the prefix too), on batches laid out as TRL lays them out (left-padded prompts, shuffled
rows, completions of different lengths, groups split across chunks)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AttentionInterface, AutoTokenizer, Qwen3ForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from trl import GRPOConfig, GRPOTrainer

from pipeline.train import trl_surface
from pipeline.train.levers import prefix_flex
from pipeline.train.levers.fp32_attention import FP32_ON_CPU
from pipeline.train.levers.grpo_trainer import GRPOLevers, LeveredGRPOTrainer
from pipeline.train.levers.prefix_flex import DISPATCH
from pipeline.train.levers.prefix_mask import group_rows, pack
from pipeline.train.levers.shared_prefix import blocker, group_micro_batches
from tests.helpers.exactness import allow_flex_backward_on_cpu, assert_same, both_paths
from tests.helpers.tiny_models import TOKENIZER, tiny_config


def make_trainer(tmp_path, peft: bool, beta: float = 0.0, attn: str = "sdpa", shared_prefix: bool = True,
                 accumulation: int = 1, prefill_once: bool = False,
                 drop_finished_rows: bool = False) -> LeveredGRPOTrainer:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, report_to="none", max_steps=1, beta=beta,
                      gradient_accumulation_steps=accumulation,
                      bf16=False)  # fp32: the comparison is of layouts, not of rounding
    model = Qwen3ForCausalLM(tiny_config(len(tokenizer), attn))
    if beta and not peft:  # TRL loads the reference model from the policy's path
        model.save_pretrained(tmp_path / "model")
        model = str(tmp_path / "model")
        args.model_init_kwargs = {"attn_implementation": attn, "dtype": torch.float32}
    trainer = LeveredGRPOTrainer(
        model=model, args=args, processing_class=tokenizer,
        reward_funcs=lambda completions, **_: [float(len(c)) for c in completions],
        train_dataset=Dataset.from_list([{"prompt": "1+1="}, {"prompt": "What is 12 + 30?"}]),
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0) if peft else None,
        levers=GRPOLevers(shared_prefix=shared_prefix, prefill_once=prefill_once,
                          drop_finished_rows=drop_finished_rows),
    )
    if peft:
        with torch.no_grad():  # B starts at zero: a trained-looking adapter makes the policy differ from the base
            for name, param in trainer.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.05)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() around each step
    return trainer


def grpo_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Two prompts (3 and 5 real tokens, left-padded to 6) x 4 completions each, rows shuffled as TRL does, one
    completion empty after masking (mask_truncated_completions) and lengths from 1 to 7."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, 100, (3,), generator=gen), torch.randint(5, 100, (5,), generator=gen)]
    lengths = [7, 1, 4, 0, 2, 7, 5, 3]
    order = [5, 0, 7, 2, 1, 4, 6, 3]
    prompt_ids, prompt_mask = torch.zeros(8, 6, dtype=torch.long), torch.zeros(8, 6, dtype=torch.long)
    completion_ids = torch.randint(5, 100, (8, 7), generator=gen)
    completion_mask = torch.zeros(8, 7, dtype=torch.long)
    for row, source in enumerate(order):
        prompt = prompts[source // 4]
        prompt_ids[row, 6 - len(prompt):] = prompt
        prompt_mask[row, 6 - len(prompt):] = 1
        completion_mask[row, : lengths[source]] = 1
    completion_ids = completion_ids * completion_mask
    return {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": torch.randn(8, generator=gen),
        "old_per_token_logps": torch.randn(8, 7, generator=gen) * 0.1 - 4.0,
        "num_items_in_batch": completion_mask.sum(),
    }


def test_pack_lays_each_group_out_once_with_restarting_positions() -> None:
    batch = grpo_batch()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    packed = pack(ids, mask, 7)
    assert packed is not None and packed.input_ids.size(0) == 2  # one packed row per distinct prompt
    # 5-token prompt + completions of 2, 7, 5 and 3 tokens: 4 shared + 17 branch tokens (per row: 4 x 5 + 17)
    assert packed.input_ids.size(1) == 4 + 2 + 7 + 5 + 3
    row = 0  # first row of the batch: the second prompt's first completion (7 tokens)
    where = packed.gather_index[row] // packed.input_ids.size(1), packed.gather_index[row] % packed.input_ids.size(1)
    assert torch.equal(packed.shift_labels[where], batch["completion_ids"][row])
    assert torch.equal(packed.position_ids[where], torch.arange(4, 11))  # continues the prompt, from its last token
    assert torch.equal(packed.input_ids[where][1:], batch["completion_ids"][row][:-1])
    # a branch sees the shared prompt and itself only, never another completion
    first, last = int(where[1][0]), int(where[1][-1])
    visible = packed.allowed[int(where[0][0]), 0, last]
    assert visible[:4].all() and visible[first : last + 1].all() and int(visible.sum()) == 4 + 7
    # a completion mask with a hole is not TRL's layout: the caller keeps the per-row path
    holes = mask.clone()
    holes[0, 8] = 0
    assert pack(ids, holes, 7) is None


@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("attn", ["sdpa", "eager", FP32_ON_CPU])
def test_log_probs_and_entropies_equal_trls_per_row(tmp_path, peft: bool, attn: str) -> None:
    trainer = make_trainer(tmp_path, peft, attn=attn)
    batch = grpo_batch()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)

    def forward(t):
        with torch.no_grad():  # batch_size=3 splits both groups across chunks, as TRL's old/ref forwards do
            logps, entropy, _ = t._get_per_token_logps_and_entropies(t.model, ids, mask, 7, batch_size=3,
                                                                     compute_entropy=True)
        return logps, entropy

    (row_logps, row_entropy), (logps, entropy) = both_paths(trainer, forward)
    assert (row_logps[batch["completion_mask"].bool()] < 0).all()
    assert torch.equal(logps == 0, row_logps == 0)  # zero exactly where TRL gives zero (masked tokens)
    assert_same(logps, row_logps)
    assert_same(entropy, row_entropy)


@pytest.mark.parametrize(("peft", "beta"), [(True, 0.0), (False, 0.0), (True, 0.05), (False, 0.05)],
                         ids=["lora-beta0", "full-beta0", "lora-kl", "full-kl"])
def test_loss_and_gradients_equal_trls_own_loss(tmp_path, peft: bool, beta: float) -> None:
    trainer = make_trainer(tmp_path, peft, beta=beta)
    model = trainer.model.train()
    batch = grpo_batch()
    if beta:
        # the reference log-probs through the same method TRL's scoring step calls (adapter off / ref model)
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        ref_model = trainer.ref_model if trainer.ref_model is not None else model

        def reference(t):
            with torch.no_grad(), (model.disable_adapter() if peft else torch.no_grad()):
                return t._get_per_token_logps_and_entropies(ref_model, ids, mask, 7, batch_size=4)[0]

        row_ref, ref = both_paths(trainer, reference)
        assert_same(ref, row_ref)
        batch["ref_per_token_logps"] = row_ref

    def loss_and_grads(t):
        model.zero_grad()
        loss = GRPOTrainer.compute_loss(t, model, dict(batch))  # TRL's own loss on its inputs
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    (row_loss, row_grads), (loss, grads) = both_paths(trainer, loss_and_grads)
    assert row_loss != 0 and any(g.abs().sum() > 0 for g in row_grads)
    assert_same(loss, row_loss)
    for shared, per_row in zip(grads, row_grads, strict=True):
        assert_same(shared, per_row)


@pytest.mark.parametrize(("peft", "beta"), [(True, 0.05), (False, 0.0)], ids=["lora-kl", "full-beta0"])
def test_flex_block_mask_gives_the_4d_masks_and_trls_per_row_numbers(tmp_path, monkeypatch, peft: bool,
                                                                     beta: float) -> None:
    """One trainer, three layouts of one batch: TRL's per-row forwards, the packed rows through the 4-D mask (SDPA),
    the packed rows through FlexAttention's block mask (`sdpa_shared_prefix`, eager on CPU): log-probs and
    entropies (chunks splitting both groups), TRL's loss (with its KL term) and the gradients."""
    allow_flex_backward_on_cpu(monkeypatch)
    monkeypatch.setattr("pipeline.train.levers.prefix_flex.reached", trl_surface.Counter())
    trainer = make_trainer(tmp_path, peft, beta=beta)
    model = trainer.model.train()
    batch = grpo_batch()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    if beta:
        with torch.no_grad(), model.disable_adapter():
            batch["ref_per_token_logps"] = GRPOTrainer._get_per_token_logps_and_entropies(
                trainer, model, ids, mask, 7, batch_size=8)[0]

    def numbers(attn: str, shared: bool) -> tuple:
        next(m for m in model.modules() if isinstance(m, Qwen3ForCausalLM)).set_attn_implementation(attn)
        trainer.levers = dataclasses.replace(trainer.levers, shared_prefix=shared)
        with torch.no_grad():
            logps, entropy, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, 7, batch_size=3,
                                                                           compute_entropy=True)
        model.zero_grad()
        loss = GRPOTrainer.compute_loss(trainer, model, dict(batch))
        loss.backward()
        return logps, entropy, loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    per_row, dense = numbers("sdpa", False), numbers("sdpa", True)
    assert prefix_flex.reached["FlexAttention block mask"] == 0
    flex = numbers(DISPATCH, True)
    # 2 layers x (the two no-grad chunks of 3 rows that repeat a prompt + the loss forward)
    assert prefix_flex.reached["FlexAttention block mask"] == 2 * 3
    assert per_row[2] != 0 and any(g.abs().sum() > 0 for g in per_row[3])
    for want in (dense, per_row):
        for got, expected in zip(flex[:3] + tuple(flex[3]), want[:3] + tuple(want[3]), strict=True):
            assert_same(got, expected)


def split(batch: dict, sizes: int) -> list[dict]:
    rows = len(batch["prompt_ids"])
    return [{k: v if v.ndim == 0 else v[i : i + sizes] for k, v in batch.items()} for i in range(0, rows, sizes)]


def test_regrouped_micro_batches_hold_whole_groups_and_give_the_same_step(tmp_path) -> None:
    trainer = make_trainer(tmp_path, peft=True)
    model = trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    trainer.args.steps_per_generation = 2
    shuffled = split(grpo_batch(), 4)  # TRL's split of a shuffled generation batch: both prompts in both halves
    regrouped = group_micro_batches(shuffled)
    assert [len({tuple(p.tolist()) for p in c["prompt_ids"]}) for c in shuffled] == [2, 2]
    assert [len({tuple(p.tolist()) for p in c["prompt_ids"]}) for c in regrouped] == [1, 1]
    rows = [sorted(map(tuple, torch.cat([c["completion_ids"] for c in chunks]).tolist()))
            for chunks in (shuffled, regrouped)]
    assert rows[0] == rows[1]  # the same rows, only moved

    def step(chunks):  # one optimizer step's accumulated loss and gradients, TRL's loss (dapo)
        model.zero_grad()
        total = sum(GRPOTrainer.compute_loss(trainer, model, dict(c)) for c in chunks)
        total.backward()
        return total.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    (loss, grads), (row_loss, row_grads) = step(regrouped), step(shuffled)
    assert_same(loss, row_loss)
    for got, want in zip(grads, row_grads, strict=True):
        assert_same(got, want)


def test_a_training_step_uses_the_shared_layout_and_says_when_it_cannot(tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setattr(trl_surface, "reached", trl_surface.Counter())
    monkeypatch.setattr("pipeline.train.levers.shared_prefix.reached", trl_surface.reached)
    monkeypatch.setattr("pipeline.train.levers.grpo_trainer.reached", trl_surface.reached)
    monkeypatch.setattr("pipeline.train.levers.prefill_once.reached", trl_surface.reached)
    monkeypatch.setattr("pipeline.train.levers.compact_decoding.reached", trl_surface.reached)
    trainer = make_trainer(tmp_path / "sdpa", peft=True, beta=0.05, accumulation=2, prefill_once=True,
                           drop_finished_rows=True)
    with caplog.at_level(logging.INFO, logger="pipeline.train.levers.shared_prefix"):
        trainer.train()
    packed = [r.message for r in caplog.records if "each prompt forwarded once" in r.message]
    assert len(packed) == 1 and "through the 4-D mask: CPU" in packed[0]  # once per run, naming the path
    caplog.clear()
    assert trl_surface.reached["prefilled_cache"] == 1  # the generation batch's 2 prompts prefilled once each
    assert trl_surface.reached["compact_sample"] == 1  # ... and decoded by the loop that drops finished rows
    assert trl_surface.reached["_get_per_token_logps_and_entropies"] >= 2  # reference + loss forwards
    assert trl_surface.reached["_prepare_inputs"] == 1  # one generation batch, regrouped once
    for chunk in trainer._buffered_inputs:  # 2 prompts x 4 completions over 2 micro-batches: one group each
        assert len(group_rows(chunk["prompt_ids"], chunk["prompt_mask"])) == 1
    # an attention function we cannot vouch for (it might drop a 4-D mask, as flash-attention does)
    AttentionInterface.register("unvetted_sdpa", sdpa_attention_forward)
    with caplog.at_level(logging.INFO, logger="pipeline.train.levers.shared_prefix"):
        make_trainer(tmp_path / "other", peft=True, beta=0.05, attn="unvetted_sdpa").train()
    said = [r.message for r in caplog.records if "per-row" in r.message]
    assert len(said) == 1 and "unvetted_sdpa" in said[0]  # once, naming the reason


def test_the_layout_is_refused_where_a_4d_mask_would_not_be_exact() -> None:
    cpu = torch.device("cpu")
    sdpa = Qwen3ForCausalLM(tiny_config(128, "sdpa"))
    assert blocker(sdpa, cpu, False, {"pixel_values": None}) is None
    assert "image" in blocker(sdpa, cpu, False, {"pixel_values": torch.zeros(1)})
    assert "auxiliary" in blocker(sdpa, cpu, True, {})
    assert blocker(sdpa, torch.device("cuda"), False, {}) is None  # CUDA: the block mask (prefix_flex)
    assert "FlexAttention" in blocker(sdpa, torch.device("meta"), False, {})
    sliding = tiny_config(128, "sdpa")
    sliding.layer_types = ["sliding_attention", "full_attention"]
    assert "sliding" in blocker(Qwen3ForCausalLM(sliding), cpu, False, {})
