"""Shared-prefix layout: rows that start with the same prompt become one packed row, the prompt computed once.

A group of rows [prompt, completion_k] is laid out as

    [prompt[:-1] | prompt[-1], completion_1[:-1] | ... | prompt[-1], completion_G[:-1]]

with each branch's positions continuing from the prompt (restarting after it for every completion) and a mask in
which a branch sees the shared prompt tokens and its own earlier tokens only. Every token then has exactly the
context and position offsets it has in its own row, so a causal LM gives it the same hidden state. The prompt's
last token opens every branch because its output predicts that branch's first completion token: scoring it once
per branch lets the labels be one per position (`shift_labels`), with no change to the LM head.

Cost: G·(P+R) tokens become P-1 + G·R (plus G·P² → (P+G·R)² attention scores, small next to the projections for
short prompts and large models alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class PackedRows:
    """Model inputs of the packed rows and where each original row's completion tokens landed in them."""

    input_ids: torch.Tensor  # (N, L)
    position_ids: torch.Tensor  # (N, L)
    # (N, L): 0 = shared prompt, k > 0 = branch k, -1 = padding; `visible` turns it into the mask
    segment: torch.Tensor
    shift_labels: torch.Tensor  # (N, L): the token each position predicts, IGNORE where none
    gather_index: torch.Tensor  # (B, C): flat index into (N*L,) of row b's completion token j; N*L where none

    @property
    def allowed(self) -> torch.Tensor:
        """(N, 1, L, L) bool: query i may attend key j (the dense form; the block mask evaluates the same rule)."""
        index = torch.arange(self.segment.size(1), device=self.segment.device)
        return visible(index[None, :, None], index[None, None, :], self.segment[:, :, None],
                       self.segment[:, None, :])[:, None]

    def unpack(self, per_position: torch.Tensor) -> torch.Tensor:
        """(N, L) values per packed position -> (B, C) per original completion token, 0 where there is none."""
        flat = torch.cat([per_position.reshape(-1), per_position.new_zeros(1)])
        return flat[self.gather_index]

    def attention_mask(self, dtype: torch.dtype | None) -> torch.Tensor:
        """The mask in the form the attention implementation adds (float, eager) or selects with (bool, SDPA)."""
        if dtype is None:
            return self.allowed
        blocked = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
        return blocked.masked_fill_(~self.allowed, torch.finfo(dtype).min)


def visible(query: torch.Tensor, key: torch.Tensor, query_segment: torch.Tensor, key_segment: torch.Tensor,
            ) -> torch.Tensor:
    """Whether the query at `query` may attend the key at `key`, given their segments: causal, within one segment
    or from a branch to the shared prompt; every position sees itself (padding never attends to nothing). Plain
    tensor operations, so the same rule gives the dense 4-D mask (broadcast) and FlexAttention's mask_mod (scalars)."""
    causal = query >= key
    same = (query_segment == key_segment) & (query_segment != -1)
    return causal & (same | ((key_segment == 0) & (query_segment > 0))) | (query == key)


def group_rows(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]]:
    """Row indices grouped by identical prompt (real tokens only, padding ignored), in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, (ids, mask) in enumerate(zip(prompt_ids.tolist(), prompt_mask.tolist(), strict=True)):
        groups.setdefault(tuple(t for t, m in zip(ids, mask, strict=True) if m), []).append(row)
    return list(groups.values())


def completion_lengths(completion_mask: torch.Tensor) -> torch.Tensor | None:
    """Tokens per completion when every mask is right padding (ones then zeros); None otherwise (holes)."""
    lengths = completion_mask.sum(1)
    prefix = torch.arange(completion_mask.size(1), device=completion_mask.device) < lengths[:, None]
    return lengths if torch.equal(prefix, completion_mask.bool()) else None


def shares_a_prefix(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> bool:
    """Whether packing saves anything: some prompt occurs in more than one row."""
    return any(len(rows) > 1 for rows in group_rows(prompt_ids, prompt_mask))


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_width: int) -> PackedRows | None:
    """Packed rows of a GRPO batch as TRL lays it out (left-padded prompts, then right-padded completions), read
    out per completion token: (B, completion_width).

    None when the layout does not hold (a completion mask with holes, or a row without a prompt token), so the
    caller keeps the per-row path.
    """
    width = input_ids.size(1) - completion_width
    prompt_ids, prompt_mask = input_ids[:, :width], attention_mask[:, :width]
    lengths = completion_lengths(attention_mask[:, width:])
    if lengths is None or not bool(prompt_mask.any(1).all()):
        return None
    completions = [input_ids[row, width : width + length] for row, length in enumerate(lengths.tolist())]
    return pack_branches(prompt_ids, prompt_mask, completions, [0] * len(completions), completion_width)


def pack_pairs(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
               ) -> PackedRows | None:
    """Packed rows of a DPO batch as TRL lays it out (rows [prompt, completion], right-padded, chosen rows then
    rejected rows), read out in the layout of the fused LM head's per-row output: (B, L - 1), column t scoring token
    t + 1. Rows group by identical prompt, so each pair (and any prompt repeated across pairs) shares one prompt.

    None when a row is not [prompt, completion, padding] with at least one prompt token.
    """
    lengths = completion_mask.sum(1)
    # a row whose completion was truncated away is all prompt
    prompt_lengths = torch.where(lengths > 0, (completion_mask.cumsum(1) == 0).sum(1), attention_mask.sum(1))
    columns = torch.arange(input_ids.size(1), device=input_ids.device)
    completion_at = (columns >= prompt_lengths[:, None]) & (columns < (prompt_lengths + lengths)[:, None])
    if (not torch.equal(completion_at, completion_mask.bool()) or not bool((prompt_lengths > 0).all())
            or not torch.equal(attention_mask.bool(), columns < (prompt_lengths + lengths)[:, None])):
        return None
    prompt_mask = columns < prompt_lengths[:, None]
    starts, lengths = prompt_lengths.tolist(), lengths.tolist()
    completions = [input_ids[row, start : start + length]
                   for row, (start, length) in enumerate(zip(starts, lengths, strict=True))]
    # the prompt's last token (column start - 1) scores the first completion token
    return pack_branches(input_ids, prompt_mask, completions, [start - 1 for start in starts], input_ids.size(1) - 1)


def pack_branches(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completions: list[torch.Tensor],
                  offsets: list[int], width: int) -> PackedRows:
    """Rows grouped by identical prompt (`prompt_mask` marks each row's prompt tokens in `prompt_ids`), each group
    one packed row [prompt[:-1] | prompt[-1], completion_1[:-1] | ...]; row b's completion token j is read out at
    column offsets[b] + j of a (B, width) result."""
    groups = group_rows(prompt_ids, prompt_mask)
    lengths = [len(completion) for completion in completions]
    prompts = [prompt_ids[rows[0]][prompt_mask[rows[0]].bool()] for rows in groups]
    sizes = [len(p) - 1 + sum(lengths[r] for r in rows) for p, rows in zip(prompts, groups, strict=True)]
    num, size, device = len(groups), max(sizes), prompt_ids.device

    ids = torch.zeros(num, size, dtype=prompt_ids.dtype, device=device)
    positions = torch.zeros(num, size, dtype=torch.long, device=device)
    labels = torch.full((num, size), IGNORE, dtype=prompt_ids.dtype, device=device)
    # segment id per position: 0 = shared prompt, k > 0 = branch k, -1 = padding (attends to itself only)
    segment = torch.full((num, size), -1, dtype=torch.long, device=device)
    gather = torch.full((len(completions), width), num * size, dtype=torch.long, device=device)
    for n, (prompt, rows) in enumerate(zip(prompts, groups, strict=True)):
        shared = len(prompt) - 1
        ids[n, :shared] = prompt[:-1]
        positions[n, :shared] = torch.arange(shared, device=device)
        segment[n, :shared] = 0
        start = shared
        for branch, row in enumerate(rows, start=1):
            length = lengths[row]
            if length == 0:
                continue
            end = start + length
            ids[n, start] = prompt[-1]
            ids[n, start + 1 : end] = completions[row][: length - 1]
            positions[n, start:end] = torch.arange(shared, shared + length, device=device)
            labels[n, start:end] = completions[row]
            segment[n, start:end] = branch
            gather[row, offsets[row] : offsets[row] + length] = torch.arange(n * size + start, n * size + end,
                                                                             device=device)
            start = end
    return PackedRows(ids, positions, segment, labels, gather)
