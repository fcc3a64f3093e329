"""The turn cache (pipeline/train/observe/turn_cache.py): a batch of episodes that drop out and gain tool results of
different lengths between turns gets, each turn, the replies each episode gets alone from a fresh greedy prefill,
while only the new tokens are forwarded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2Config, Qwen3ForCausalLM

from pipeline.train.levers import prefill_once
from pipeline.train.levers.prefill_once import full_attention_only
from pipeline.train.observe.turn_cache import TurnCache
from tests.helpers.tiny_models import tiny_config

VOCAB, PAD, BUDGET = 96, 0, 40
# a token the model says often enough to end its replies at different lengths, as an end of turn does
STOPS = list(range(1, VOCAB, 6))


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = tiny_config(VOCAB)
    config.pad_token_id = PAD
    model = Qwen3ForCausalLM(config).eval()
    model.generation_config.eos_token_id = STOPS
    return model


def tokens(length: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return [t for t in torch.randint(2, VOCAB, (length * 3,), generator=generator).tolist() if t not in STOPS][:length]


def alone(model, episode) -> list[int]:
    """The episode's next reply from a fresh prefill of its own tokens, no batch, no padding."""
    ids = torch.tensor([episode.prompt_ids + episode.completion_ids])
    room = BUDGET - len(episode.completion_ids)
    with torch.no_grad():
        row = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=room, do_sample=False,
                             pad_token_id=PAD)[0, ids.shape[1]:].tolist()
    end = next((i + 1 for i, tok in enumerate(row) if tok in STOPS), len(row))
    return row[:end]


def forwarded_shapes(model) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    model.model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)),
                                          with_kwargs=True)
    return seen


@pytest.mark.parametrize("opening", [0, 10], ids=["own-prompts", "common-opening"])
def test_replies_equal_a_fresh_prefill_of_each_episode_while_only_new_tokens_are_forwarded(model, opening,
                                                                                          monkeypatch) -> None:
    monkeypatch.setattr(prefill_once, "MIN_SAVED_TOKENS", 16)  # the 10-token opening saves 20 token forwards here
    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=STOPS[0])
    # with an opening: every prompt starts with the same 10 tokens (a system prompt), computed once for all three
    episodes = [SimpleNamespace(prompt_ids=tokens(opening, 7) + tokens(n, seed), completion_ids=[])
                for n, seed in ((5, 1), (11, 2), (8, 3))]
    turns = TurnCache(model, tokenizer, BUDGET)
    seen = forwarded_shapes(model)
    with torch.no_grad():
        first = turns.replies(episodes)
    assert first == [alone(model, e) for e in episodes]
    width = opening + 11
    prefill = [(1, opening), (3, width - 1 - opening)] if opening else [(3, width)]
    assert seen[: len(prefill)] == prefill
    seen.clear()
    assert len({len(r) for r in first}) > 1  # replies of different lengths: holes after the shorter ones' ends

    # episode 1 is finished; 0 and 2 get tool results of different lengths, as run_tools appends them
    for episode, reply, seed, n in ((episodes[0], first[0], 4, 3), (episodes[2], first[2], 5, 6)):
        episode.completion_ids = episode.completion_ids + reply + tokens(n, seed)
    playing = [episodes[0], episodes[2]]
    with torch.no_grad():
        second = turns.replies(playing)
    assert second == [alone(model, e) for e in playing]
    assert seen[0] == (2, 1 + 6)  # the last reply's final token and the longer tool result, not the whole episodes

    episodes[2].completion_ids = episodes[2].completion_ids + second[1] + tokens(4, 6)
    seen.clear()
    with torch.no_grad():
        third = turns.replies([episodes[2]])
    assert third == [alone(model, episodes[2])]
    assert seen[0] == (1, 1 + 4)


def test_an_episode_whose_tokens_changed_is_refused(model) -> None:
    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=STOPS[0])
    episode = SimpleNamespace(prompt_ids=tokens(5, 1), completion_ids=[])
    turns = TurnCache(model, tokenizer, BUDGET)
    with torch.no_grad():
        turns.replies([episode])
    episode.prompt_ids = tokens(5, 9)
    with pytest.raises(RuntimeError, match="only appending"):
        turns.replies([episode])


def test_sliding_window_layers_get_a_fresh_prefill_each_turn() -> None:
    full = SimpleNamespace(config=Qwen2Config(num_hidden_layers=2, use_sliding_window=False, sliding_window=64))
    sliding = SimpleNamespace(config=Qwen2Config(num_hidden_layers=2, use_sliding_window=True, sliding_window=64,
                                                 max_window_layers=0))
    assert full_attention_only(full) and not full_attention_only(sliding)
