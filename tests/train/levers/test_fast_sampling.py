"""Inverse-CDF sampling draws multinomial's distribution, over a toy and a real vocabulary, only inside its scope."""

from __future__ import annotations

import torch

from pipeline.train.levers.fast_sampling import inverse_cdf_sampling


def test_inverse_cdf_sampling_draws_the_same_distribution() -> None:
    probs = torch.tensor([[0.0, 0.5, 0.2, 0.0, 0.3], [0.9, 0.0, 0.0, 0.1, 0.0]])
    torch.manual_seed(0)
    with inverse_cdf_sampling():
        draws = torch.cat([torch.multinomial(probs, num_samples=1) for _ in range(20000)], dim=1)
    for row in range(2):
        freq = torch.bincount(draws[row], minlength=5).float() / draws.size(1)
        torch.testing.assert_close(freq, probs[row], atol=0.015, rtol=0)
        assert freq[probs[row] == 0].sum() == 0  # zero-probability tokens are never drawn


def test_inverse_cdf_sampling_matches_multinomial_over_a_real_vocabulary() -> None:
    # float32 cumulative sums over 49k entries: the head and the tail must both keep their mass
    torch.manual_seed(0)
    probs = (torch.randn(49152) * 3).softmax(-1)
    rows = probs.expand(2000, -1).contiguous()
    with inverse_cdf_sampling():
        draws = torch.cat([torch.multinomial(rows, num_samples=1).flatten() for _ in range(10)])
    freq = torch.bincount(draws, minlength=probs.numel()).float() / draws.numel()
    order = probs.argsort(descending=True)
    head, tail = order[:10], order[1000:]
    sigma = (probs[head] * (1 - probs[head]) / draws.numel()).sqrt()
    assert ((freq[head] - probs[head]).abs() < 5 * sigma).all()
    tail_mass = probs[tail].sum()
    tail_sigma = (tail_mass * (1 - tail_mass) / draws.numel()).sqrt()
    assert abs(freq[tail].sum() - tail_mass) < 5 * tail_sigma


def test_inverse_cdf_sampling_is_scoped() -> None:
    original = torch.multinomial
    with inverse_cdf_sampling():
        assert torch.multinomial is not original
        # other call forms go to torch's own sampler
        assert torch.multinomial(torch.tensor([[0.5, 0.5]]), num_samples=2).shape == (1, 2)
    assert torch.multinomial is original
