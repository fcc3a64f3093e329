"""Shared-prefix DPO forwards (pipeline/train/levers/shared_prefix_dpo.py, prefix_mask.pack_pairs) give TRL's per-row
numbers on the batch TRL's own collator builds: per-token log-probs and the other fused-head outputs of the policy
and the reference, TRL's loss, its logged metrics and the gradients, for LoRA (reference = adapter off) and full
fine-tuning (a reference model), sigmoid and ipo."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AttentionInterface, AutoTokenizer, Qwen3ForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from trl import DPOConfig

from pipeline.train import trl_surface
from pipeline.train.levers import prefix_flex, shared_prefix_dpo
from pipeline.train.levers.prefix_flex import DISPATCH
from pipeline.train.levers.prefix_mask import pack_pairs
from pipeline.train.levers.shared_prefix_dpo import SharedPrefixDPOTrainer
from tests.helpers.exactness import RTOL, allow_flex_backward_on_cpu, assert_same, both_paths
from tests.helpers.tiny_models import TOKENIZER, tiny_config

# two pairs share a prompt (one packed row of 4 branches); lengths differ so rows are right-padded differently
PAIRS = [
    {"prompt": "What is 12 + 30?", "chosen": " 42", "rejected": " It is 41, I think."},
    {"prompt": "1+1=", "chosen": " 2, since one and one make two", "rejected": " 3"},
    {"prompt": "What is 12 + 30?", "chosen": " Forty-two.", "rejected": " 43"},
    {"prompt": "Name a colour:", "chosen": " blue", "rejected": " seven"},
]


def make_trainer(tmp_path, peft: bool, loss_type: str = "sigmoid", attn: str = "sdpa",
                 **extra: object) -> SharedPrefixDPOTrainer:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, report_to="none",
                     max_steps=1, loss_type=[loss_type], beta=0.5, **extra,
                     bf16=False)  # fp32: the comparison is of layouts, not of rounding
    model = Qwen3ForCausalLM(tiny_config(len(tokenizer), attn))
    ref_model = None
    if not peft:  # a reference that differs from the policy, so the log-ratios are not all zero
        ref_model = copy.deepcopy(model)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.02)
    trainer = SharedPrefixDPOTrainer(
        model=model, ref_model=ref_model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(PAIRS),
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0) if peft else None, shared_prefix=True,
    )
    if peft:
        with torch.no_grad():  # B starts at zero: a trained-looking adapter makes the policy differ from the base
            for name, param in trainer.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.05)
    return trainer


def first_batch(trainer: SharedPrefixDPOTrainer) -> dict[str, torch.Tensor]:
    trainer.args.dataloader_num_workers = 0
    return next(iter(trainer.get_train_dataloader()))


def test_pack_pairs_lays_each_prompt_out_once() -> None:
    # rows: [prompt, chosen] x 2 then [prompt, rejected] x 2, right-padded, as TRL's DataCollatorForPreference
    ids = torch.tensor([[1, 2, 3, 4, 5], [7, 8, 9, 0, 0], [1, 2, 3, 6, 0], [7, 8, 10, 11, 0]])
    attention = (torch.arange(5) < torch.tensor([5, 3, 4, 4])[:, None]).long()
    completion = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 1, 1, 0]])
    packed = pack_pairs(ids, attention, completion)
    assert packed is not None and packed.input_ids.tolist() == [[1, 2, 3, 4, 3], [7, 8, 8, 10, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 2, 0]]  # rejected restarts after the prompt
    assert packed.shift_labels.tolist() == [[-100, -100, 4, 5, 6], [-100, 9, 10, 11, -100]]
    # the rejected branch sees the prompt and itself, never the chosen tokens
    assert packed.allowed[0, 0, 4].tolist() == [True, True, False, False, True]
    # read out where TRL's per-row output (column t scores token t + 1) has each completion token
    per_row = packed.unpack(packed.shift_labels)
    assert torch.equal(per_row, (ids * completion)[:, 1:])
    holes = completion.clone()
    holes[0] = torch.tensor([0, 0, 1, 0, 1])  # not [prompt, completion]: the caller keeps the per-row path
    assert pack_pairs(ids, attention, holes) is None


def fused_outputs(trainer: SharedPrefixDPOTrainer, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """The fused-LM-head outputs TRL's _compute_loss reads, from the same call it makes."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad(), trainer._packed(batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                    labels=labels, fused_lm_head=True)
    return {k: v for k, v in out.items() if v.ndim == 2}


@pytest.mark.parametrize(("peft", "loss_type", "attn", "extra"),
                         [(True, "sigmoid", "sdpa", {}), (False, "sigmoid", "eager", {}), (True, "ipo", "eager", {}),
                          (False, "ipo", "sdpa", {}),
                          # WPO weights read another per-token output; LD-DPO re-weights the per-token log-probs
                          (True, "sigmoid", "sdpa", {"use_weighting": True, "ld_alpha": 0.5}),
                          # the packed rows through FlexAttention's block mask (prefix_flex), eager on CPU
                          (False, "sigmoid", DISPATCH, {})],
                         ids=["lora-sigmoid-sdpa", "full-sigmoid-eager", "lora-ipo-eager", "full-ipo-sdpa",
                              "lora-wpo-ld", "full-sigmoid-flex"])
def test_log_probs_loss_metrics_and_gradients_equal_trls_per_row(tmp_path, monkeypatch, peft: bool,
                                                                  loss_type: str, attn: str, extra: dict) -> None:
    monkeypatch.setattr("pipeline.train.levers.shared_prefix_dpo.reached", trl_surface.Counter())
    monkeypatch.setattr("pipeline.train.levers.prefix_flex.reached", trl_surface.Counter())
    allow_flex_backward_on_cpu(monkeypatch)
    trainer = make_trainer(tmp_path, peft, loss_type, attn, **extra)
    model = trainer.model.train()
    batch = first_batch(trainer)
    assert pack_pairs(batch["input_ids"], batch["attention_mask"], batch["completion_mask"]).input_ids.size(0) == 3

    row_out, out = both_paths(trainer, lambda t: fused_outputs(t, model, batch))
    assert set(out) >= {"log_probs", "entropy", "mean_logits", "is_top1"} | (
        {"log_sum_sq_probs"} if extra.get("use_weighting") else set())
    assert (row_out["log_probs"][batch["completion_mask"][:, 1:].bool()] < 0).all()
    for name in row_out:
        assert_same(out[name].float(), row_out[name].float())

    reference = trainer.ref_model if trainer.ref_model is not None else model
    (row_chosen, row_rejected), (chosen, rejected) = both_paths(
        trainer, lambda t: t.compute_ref_log_probs(reference, batch))
    assert_same(chosen, row_chosen)
    assert_same(rejected, row_rejected)

    def loss_grads_metrics(t):
        model.zero_grad()
        t._metrics["train"].clear()
        t._total_train_tokens = 0
        loss = t._compute_loss(model, dict(batch), return_outputs=False)  # TRL's own loss, policy + reference
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        return loss.detach(), grads, {k: torch.tensor(v) for k, v in t._metrics["train"].items()}

    (row_loss, row_grads, row_metrics), (loss, grads, metrics) = both_paths(trainer, loss_grads_metrics)
    assert row_loss != 0 and any(g.abs().sum() > 0 for g in row_grads)
    assert_same(loss, row_loss)
    for shared, per_row in zip(grads, row_grads, strict=True):
        assert_same(shared, per_row)
    assert metrics.keys() == row_metrics.keys()
    # rewards and margins are differences of log-prob sums: their error is relative to the sums, not to them
    scale = max(float(row_metrics[key].abs().max()) for key in ("logps/chosen", "logps/rejected"))
    for key in metrics:
        torch.testing.assert_close(metrics[key], row_metrics[key], rtol=RTOL, atol=RTOL * scale,
                                   msg=lambda m, key=key: f"{key}: {m}")
    # policy + reference forwards of the loss, the reference scoring, the direct call above: all packed
    assert shared_prefix_dpo.reached["packed DPO forward"] == 4
    # ... each through the block mask (2 layers) exactly when the model's attention takes one
    assert prefix_flex.reached["FlexAttention block mask"] == (2 * 4 if attn == DISPATCH else 0)


def test_a_training_step_packs_and_says_when_it_cannot(tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setattr("pipeline.train.levers.shared_prefix_dpo.reached", trl_surface.Counter())
    with caplog.at_level(logging.INFO, logger="pipeline.train.levers.shared_prefix"):
        make_trainer(tmp_path / "sdpa", peft=True).train()
        assert shared_prefix_dpo.reached["DPOTrainer._compute_loss"] == 1  # the hook TRL's step goes through
        assert shared_prefix_dpo.reached["packed DPO forward"] == 2  # policy and reference
        # an attention function we cannot vouch for (it might drop a 4-D mask, as flash-attention does)
        AttentionInterface.register("unvetted_sdpa", sdpa_attention_forward)
        other = make_trainer(tmp_path / "other", peft=True, attn="unvetted_sdpa")
        batch = first_batch(other)
        with torch.no_grad():
            for _ in range(2):
                other._compute_loss(other.model, batch, False)
    said = [r.message for r in caplog.records]
    assert sum("each prompt forwarded once per pair (8 rows -> 3 packed rows" in m for m in said) == 1
    per_row = [m for m in said if "per-row" in m]
    assert len(per_row) == 1 and "unvetted_sdpa" in per_row[0]  # once, naming the reason
    assert shared_prefix_dpo.reached["packed DPO forward"] == 2


@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
def test_reference_log_probs_scored_before_training_give_the_same_loss(tmp_path, peft: bool) -> None:
    stepwise = make_trainer(tmp_path / "steps", peft)
    upfront = make_trainer(tmp_path / "upfront", peft, precompute_ref_log_probs=True)
    assert "ref_chosen_logps" in upfront.train_dataset.column_names  # scored once, in TRL's __init__
    upfront.model.load_state_dict(stepwise.model.state_dict())  # the same policy (LoRA B drawn after the scoring)
    batch, scored = first_batch(stepwise), first_batch(upfront)
    assert "ref_chosen_logps" in scored and "ref_chosen_logps" not in batch
    losses = [t._compute_loss(t.model.train(), dict(b), return_outputs=False).detach()
              for t, b in ((stepwise, batch), (upfront, scored))]
    assert losses[0] != 0
    assert_same(losses[1], losses[0])


def test_reference_scoring_up_front_is_chosen_past_one_pass_over_the_rows() -> None:
    from omegaconf import OmegaConf

    from pipeline.train.stages.dpo import precompute_reference

    rows = Dataset.from_list(PAIRS * 25)  # 100 pairs
    def cfg(steps: int, epochs: float = 1.0, choice: bool | None = None):
        return OmegaConf.create({"max_steps": steps, "stage": {"batch_size": 8, "num_epochs": epochs,
                                                               "precompute_ref_log_probs": choice}})
    assert not precompute_reference(cfg(10), rows)  # 80 of 100 rows read: scoring all 100 would cost more
    assert precompute_reference(cfg(20), rows)  # 160 reads
    assert precompute_reference(cfg(-1, epochs=3), rows) and not precompute_reference(cfg(-1), rows)
    assert precompute_reference(cfg(10, choice=True), rows) and not precompute_reference(cfg(20, choice=False), rows)
    assert not precompute_reference(cfg(20), rows.to_iterable_dataset())
    # in-memory rows over 2 processes: TRL's score cache would be private to each (rank 1 cannot open rank 0's)
    assert not precompute_reference(cfg(20), rows, world_size=2)  # and null stays off over several processes
    with pytest.raises(ValueError, match="private to each process"):
        precompute_reference(cfg(20, choice=True), rows, world_size=2)
