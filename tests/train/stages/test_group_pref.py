"""Offline group preference: the listwise hinge loss against hand-computed values, the smoothed max, the DPO-pairs
fallback, the implicit reward, the batching of groups and tokenizing a group (the real run:
tests/e2e/test_group_pref.py)."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.train.stages.group_pref import (
    collate_groups,
    group_loss,
    implicit_rewards,
    regroup,
    strongest_rejected,
)
from tests.helpers.runs import REPO

GROUPS = REPO / "tests" / "fixtures" / "formats" / "scored_groups.jsonl"


def toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # group 1: chosen 0.2, rejected 0.1 and 0.5; group 2: chosen 1.0, one rejected 0.3 (second slot is padding)
    chosen = torch.tensor([0.2, 1.0])
    rejected = torch.tensor([[0.1, 0.5], [0.3, 99.0]])
    mask = torch.tensor([[True, True], [True, False]])
    return chosen, rejected, mask


def test_hinge_matches_the_hand_computed_value() -> None:
    chosen, rejected, mask = toy()
    losses = group_loss(chosen, rejected, mask, loss="hinge", alpha=0.5)
    # group 1: max(0, 0.5 - 0.2 + 0.5) = 0.8; group 2: max(0, 0.3 - 1.0 + 0.5) = 0 (the padded 99 is ignored)
    assert torch.allclose(losses, torch.tensor([0.8, 0.0]))
    assert math.isclose(float(losses.mean()), 0.4, rel_tol=1e-6)


def test_smoothed_max_is_the_softmax_weighted_mean_and_tends_to_the_max() -> None:
    chosen, rejected, mask = toy()
    # lambda = 1 on (0.1, 0.5): weights e^0.1, e^0.5
    w1, w2 = math.exp(0.1), math.exp(0.5)
    expected = (0.1 * w1 + 0.5 * w2) / (w1 + w2)
    smooth = strongest_rejected(rejected, mask, smooth_lambda=1.0)
    assert math.isclose(float(smooth[0]), expected, rel_tol=1e-6)
    assert math.isclose(float(smooth[1]), 0.3, rel_tol=1e-6)
    losses = group_loss(chosen, rejected, mask, loss="hinge", alpha=0.5, smooth_lambda=1.0)
    assert math.isclose(float(losses[0]), expected - 0.2 + 0.5, rel_tol=1e-6)
    assert math.isclose(float(strongest_rejected(rejected, mask, 1000.0)[0]), 0.5, rel_tol=1e-4)


def test_dpo_pairs_fallback_averages_over_the_real_rejected_ones() -> None:
    chosen, rejected, mask = toy()
    losses = group_loss(chosen, rejected, mask, loss="dpo_pairs")

    def nls(x: float) -> float:
        return -math.log(1 / (1 + math.exp(-x)))

    assert math.isclose(float(losses[0]), (nls(0.2 - 0.1) + nls(0.2 - 0.5)) / 2, rel_tol=1e-6)
    assert math.isclose(float(losses[1]), nls(1.0 - 0.3), rel_tol=1e-6)
    with pytest.raises(ValueError, match="hinge or dpo_pairs"):
        group_loss(chosen, rejected, mask, loss="listmle")


def test_implicit_reward_is_beta_times_the_log_ratio_and_zero_at_the_start() -> None:
    policy, ref = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -5.0])
    assert torch.allclose(implicit_rewards(policy, ref, beta=0.1), torch.tensor([0.1, 0.0]))
    zero = torch.zeros(2)
    # policy == reference: every reward is 0, so the hinge loss is exactly alpha
    assert torch.allclose(group_loss(zero, zero[:, None], torch.ones(2, 1, dtype=torch.bool), alpha=1.0),
                          torch.ones(2))


def test_collate_and_regroup_put_each_response_back_in_its_group() -> None:
    features = [
        {"input_ids": [[5, 6, 7], [5, 6, 8, 9], [5, 6]], "prompt_len": 2},
        {"input_ids": [[1, 2], [1, 3]], "prompt_len": 1},
    ]
    batch = collate_groups(features, pad_id=0)
    assert batch["input_ids"].shape == (5, 4)
    # only response tokens are scored, never the prompt or the padding
    assert batch["response_mask"][1].tolist() == [False, False, True, True]
    assert batch["response_mask"][2].tolist() == [False, False, False, False]
    assert batch["attention_mask"][3].tolist() == [1, 1, 0, 0]
    chosen, rejected, mask = regroup(torch.arange(5, dtype=torch.float), batch)
    assert chosen.tolist() == [0.0, 3.0]
    assert rejected.tolist() == [[1.0, 2.0], [4.0, 0.0]]
    assert mask.tolist() == [[True, True], [True, False]]


def test_tokenize_group_shares_the_prompt_and_cuts_long_responses() -> None:
    from transformers import AutoTokenizer

    from pipeline.train.stages.group_pref import tokenize_group

    tokenizer = AutoTokenizer.from_pretrained(str(REPO / "pipeline" / "assets" / "smollm2_tokenizer"))
    row = {"prompt": [{"role": "user", "content": "Say hi"}], "chosen": "hi", "rejected": ["word " * 100, "yo"]}
    out = tokenize_group(row, tokenizer, max_length=40, max_responses=2)
    n = out["prompt_len"]
    assert len(out["input_ids"]) == 2 and out["cut"] == 1
    assert out["input_ids"][0][:n] == out["input_ids"][1][:n]
    assert out["input_ids"][0][-1] == tokenizer.eos_token_id and len(out["input_ids"][1]) == 40
