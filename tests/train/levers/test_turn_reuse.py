"""turn_reuse on the batches TRL's tool loop generates from, turn after turn: each follow-up row is a rollout's
whole history (prompt, its reply up to the end of turn, a tool result), some rollouts finished. Continuing the last
call's cache samples generate's own tokens with its logits (1e-5) while forwarding only the new tokens; a row that
extends no held one sends the batch down the fresh path, with the same result."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

from pipeline.train.levers.turn_reuse import TurnReuse, appended, ended_rows
from pipeline.train.trl_surface import reached

ENDS = list(range(100, 128))  # a quarter of the vocabulary ends a turn: most rows end within 10 tokens


def _model() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512)
    return Qwen3ForCausalLM(config).eval()


def _left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _next_turn(histories: list[list[int]], generated: torch.Tensor, keep: list[int], seed: int) -> list[list[int]]:
    """TRL's follow-up rows: history + reply up to its first end token + a tool result, for the rows in `keep`."""
    torch.manual_seed(seed)
    rows = []
    for row in keep:
        reply = generated[row].tolist()
        end = next((i + 1 for i, tok in enumerate(reply) if tok in ENDS), len(reply))
        rows.append(histories[row] + reply[:end] + torch.randint(3, 100, (int(torch.randint(2, 6, ())),)).tolist())
    return rows


def _forwarded(model: torch.nn.Module) -> list[int]:
    counts: list[int] = []
    model.model.register_forward_pre_hook(lambda _m, _a, kw: counts.append(kw["input_ids"].numel()), with_kwargs=True)
    return counts


def _three_turns(model: Qwen3ForCausalLM, reuse: TurnReuse | None, rewrite: bool = False) -> list:
    generation = GenerationConfig(do_sample=True, max_new_tokens=10, output_logits=True, top_k=0, top_p=1.0,
                                  return_dict_in_generate=True, pad_token_id=0, eos_token_id=ENDS)
    torch.manual_seed(1)
    prompt = torch.randint(3, 100, (12,)).tolist()
    # a group of 4 plays of one prompt and 2 of another, as TRL's first turn
    histories = [prompt] * 4 + [prompt[:5] + torch.randint(3, 100, (9,)).tolist()] * 2
    keeps, outputs, width = [list(range(6)), [0, 1, 3, 4, 5], [0, 3, 4]], [], 0
    for turn, keep in enumerate(keeps):
        if turn:
            histories = _next_turn(histories, outputs[-1].sequences[:, width:], keep, seed=turn)
            if rewrite and turn == 2:
                histories[1][3] = 99 if histories[1][3] != 99 else 98  # a history no held row begins
        ids, mask = _left_padded(histories)
        width = ids.size(1)
        torch.manual_seed(10 + turn)
        if reuse is None:
            outputs.append(model.generate(input_ids=ids, attention_mask=mask, generation_config=generation))
        else:
            with reuse.wrapping():
                outputs.append(model.generate(input_ids=ids, attention_mask=mask, generation_config=generation))
    return outputs


def _same(got: list, want: list) -> None:
    for mine, plain in zip(got, want, strict=True):
        assert torch.equal(mine.sequences, plain.sequences)
        for a, b in zip(mine.logits, plain.logits, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_each_turn_continues_the_last_and_samples_generates_own_tokens() -> None:
    model = _model()
    counts = _forwarded(model)
    plain = _three_turns(model, None)
    plain_tokens, before = sum(counts), reached["reused_turn"]
    counts.clear()
    reused = _three_turns(model, TurnReuse(model))
    assert reached["reused_turn"] == before + 2  # turns 2 and 3 continued the held cache
    _same(reused, plain)
    # the first turn's prompts and every reply were not forwarded again
    assert sum(counts) < 0.75 * plain_tokens, (sum(counts), plain_tokens)


def test_a_history_that_extends_no_held_row_takes_the_fresh_path() -> None:
    model = _model()
    plain = _three_turns(model, None, rewrite=True)
    before = reached["reused_turn"]
    reused = _three_turns(model, TurnReuse(model), rewrite=True)
    assert reached["reused_turn"] == before + 1  # turn 2 only
    _same(reused, plain)


def test_appended_left_pads_each_chunk_as_holes_and_ended_rows_masks_after_the_first_end() -> None:
    ids, mask = appended(torch.tensor([[5, 6], [0, 7]]), torch.tensor([[1, 1], [0, 1]]), [[8], [9, 10, 11]], pad=0)
    assert ids.tolist() == [[5, 6, 0, 0, 8], [0, 7, 9, 10, 11]]
    assert mask.tolist() == [[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]]
    generated = torch.tensor([[3, 101, 0, 0], [3, 4, 5, 6], [100, 101, 0, 0]])
    assert ended_rows(generated, set(ENDS)).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
