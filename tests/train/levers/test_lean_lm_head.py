"""`hw.lean_lm_head` (pipeline/train/levers/lean_lm_head.py): TRL's fused LM head on CPU gives the same log-probs,
entropies and gradients with only the labelled positions projected and its tiles folded in place."""

from __future__ import annotations

import itertools

import pytest
import torch
import trl.kernels.chunked_logprob as chunked_logprob
import trl.trainer.utils as trl_utils
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.utils import add_fused_lm_head

from pipeline.train.levers import lean_lm_head as lean
from pipeline.train.levers.lean_lm_head import lean_lm_head

VOCAB, HIDDEN = 300, 16


def _close(ours: torch.Tensor, trl: torch.Tensor, tol: float = 1e-6) -> None:
    scale = trl.abs().max().clamp(min=1e-30)
    assert ((ours - trl).abs().max() / scale).item() <= tol, (ours, trl)


def _fresh_statistics(n: int) -> list[torch.Tensor]:
    # running max, sum exp, x sum exp, sq sum exp, z sum, max before target, target logit (TRL's order)
    return [torch.full((n,), float("-inf")), *(torch.zeros(n) for _ in range(4)), torch.full((n,), float("-inf")),
            torch.zeros(n)]


@pytest.mark.parametrize(("entropy", "mean_logits", "scale", "inv_t", "dtype"),
                         [(*flags, torch.float32) for flags in itertools.product([False, True], [False, True],
                                                                                 [1.0, 0.5], [1.0, 1 / 0.7])]
                         + [(True, True, 0.5, 1 / 0.7, torch.bfloat16)])
def test_forward_tile_accumulates_what_trls_does(entropy: bool, mean_logits: bool, scale: float, inv_t: float,
                                                 dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    # two tiles of one row block, targets inside the first, the second and neither
    tiles = [(torch.randn(6, 40) * 4).to(dtype), (torch.randn(6, 35) * 4).to(dtype)]
    targets = torch.tensor([3, 39, 40, 74, 80, 0])
    flags = {"HAS_ENTROPY": entropy, "HAS_MEAN_LOGITS": mean_logits}
    results = []
    for fold in (lean._forward_tile, lean._TRL_FORWARD_TILE):
        stats = _fresh_statistics(6)
        for start, tile in zip((0, 40), tiles, strict=True):
            fold(tile.clone(), tile.stride(0), targets, *stats, start, tile.size(1), scale, 1.0, inv_t,
                 HAS_SOFTCAP=False, HAS_LOG_SUM_SQ_PROBS=False, HAS_IS_TOP1=False, BLOCK_SIZE=1024, **flags)
        results.append(stats)
    ours, trl = results
    # running max, sum exp, x sum exp (entropy), z sum (mean logits), target logit
    for index in (0, 1, 2, 4, 6):
        _close(ours[index], trl[index])
    assert bool((ours[2] != 0).any()) == entropy and bool((ours[4] != 0).any()) == mean_logits


@pytest.mark.parametrize(("scale", "inv_t", "with_grad", "dtype"), [
    (1.0, 1.0, True, torch.float32), (0.5, 1 / 0.7, True, torch.float32), (1.0, 1.0, False, torch.float32),
    (0.5, 1 / 0.7, True, torch.bfloat16)])
def test_backward_tile_writes_trls_gradient(scale: float, inv_t: float, with_grad: bool, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    tile = (torch.randn(5, 50) * 3).to(dtype)
    targets = torch.tensor([0, 49, 50, 7, 120])  # tile covers vocabulary 0..49: the last two rows miss it
    log_z = torch.logsumexp(tile.float() * scale * inv_t, -1) + torch.rand(5)
    grad = torch.randn(5)
    results = []
    for fold in (lean._backward_tile, lean._TRL_BACKWARD_TILE):
        out = tile.clone()
        fold(out, out.stride(0), targets, log_z, torch.zeros(5), grad, torch.zeros(5), 0, 50, scale, 1.0, inv_t,
             HAS_SOFTCAP=False, HAS_LOGPROB_GRAD=with_grad, HAS_ENTROPY_GRAD=False, BLOCK_SIZE=1024)
        results.append(out)
    _close(*results)
    assert bool(results[0].abs().sum() > 0) == with_grad


def test_cases_it_does_not_cover_go_to_trls_own_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(lean, "_TRL_FORWARD_TILE", lambda *a: calls.append("forward"))
    monkeypatch.setattr(lean, "_TRL_BACKWARD_TILE", lambda *a: calls.append("backward"))
    tile, n = torch.randn(2, 8), torch.zeros(2)
    # an fp16 tile, a softcapped one, the is_top1 output
    for low, softcap, top1 in ((True, False, False), (False, True, False), (False, False, True)):
        lean._forward_tile(tile.half() if low else tile, 8, n.long(), *_fresh_statistics(2), 0, 8, 1.0, 30.0,
                           1.0, softcap, True, False, False, top1, 1024)
    lean._backward_tile(tile, 8, n.long(), n, n, n, n, 0, 8, 1.0, 1.0, 1.0, False, True, True, 1024)
    assert calls == ["forward", "forward", "forward", "backward"]


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    return model


def _scores(model: LlamaForCausalLM, ids: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    weights = torch.linspace(-1, 1, out.log_probs.numel()).view(out.log_probs.shape)
    (out.log_probs * weights).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return [out.log_probs.detach(), out.entropy.detach(), *grads]


def test_the_fused_forward_gives_trls_numbers_and_projects_only_labelled_positions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    torch.manual_seed(2)
    ids = torch.randint(0, VOCAB, (3, 12))
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[1, 9:] = -100  # padding
    trl = _scores(model, ids, labels)
    projected = []
    apply = chunked_logprob.ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: projected.append(len(hidden)) or apply(hidden, *rest))
    with lean_lm_head():
        ours = _scores(model, ids, labels)
    assert projected == [int((labels[:, 1:] != -100).sum())] and projected[0] < labels[:, 1:].numel()
    for mine, theirs in zip(ours, trl, strict=True):
        _close(mine, theirs, 1e-5)
    assert len(ours) > 2  # gradients reached the weights


def test_the_switch_off_and_leaving_restore_trls_functions() -> None:
    originals = (chunked_logprob._forward_tile, chunked_logprob._backward_tile, trl_utils._use_triton)
    with lean_lm_head(enabled=False):
        assert (chunked_logprob._forward_tile, chunked_logprob._backward_tile, trl_utils._use_triton) == originals
    with lean_lm_head():
        assert chunked_logprob._forward_tile is lean._forward_tile and trl_utils._use_triton(torch.device("cpu"))
    assert (chunked_logprob._forward_tile, chunked_logprob._backward_tile, trl_utils._use_triton) == originals
