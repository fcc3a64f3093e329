"""Groups that teach nothing (`stage.zero_std_groups`): when every completion of a prompt gets the same reward, the
group's advantage is zero and its rows cost a forward and a backward for no gradient (with beta=0).

- keep (TRL's behaviour): they stay in the batch.
- skip (verl / DAPO's filter): their rows leave the generation batch before it is split into micro-batches; the
  rows left fill whole micro-batches, and a micro-batch with nothing left is one skipped row whose loss is scaled
  by 0 (no loss, no gradient; TRL's metrics still see real tokens). Each micro-batch's loss is rescaled so the
  step's loss is TRL's loss over the kept groups alone, for every loss type: the per-sequence normalisers (grpo,
  sapo, dr_grpo, luspo) by kept rows, bnpo by kept tokens, and the whole-batch token count of dapo / cispo / vespo
  recounted over kept rows (tests/train/levers/test_zero_std_groups.py compares with TRL's own loss on a batch
  holding only those groups).
- resample (DAPO's dynamic sampling): fresh prompts are generated and scored until the batch holds as many
  teaching groups as it has room for, at most `stage.resample_tries` extra generations per batch; what is still
  missing is skipped as above. One process only (pipeline/config/grpo_checks.py says why).

Which groups teach nothing is read from the rewards TRL computes (its own `frac_reward_zero_std` test: the weighted
total's group std is close to 0), so the two agree. Counted in `groups/*` scalars and summary.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from pipeline.config.enums import GRPOLoss

# per micro-batch: how TRL normalises the summed token losses, so a micro-batch of kept rows can be rescaled
_BY_ROWS = (GRPOLoss.grpo, GRPOLoss.sapo, GRPOLoss.dr_grpo, GRPOLoss.luspo)  # .../ rows of the micro-batch
_BY_TOKENS = (GRPOLoss.bnpo,)  # .../ tokens of the micro-batch
# dapo, cispo, vespo: .../ tokens of the whole generation batch (num_items_in_batch), recounted over kept rows
GROUP_KEY = "zero_std_group"  # per row: its group's index in the generation batch, -1 when the group teaches nothing
SCALE_KEY = "zero_std_scale"  # per micro-batch: the factor that makes its loss part of the kept groups' loss


@dataclass
class GroupCounts:
    """Counts since the start of training (summary.json) or since the last log (`groups/*` scalars)."""

    zero_std: int = 0  # groups whose rewards were all equal, among those generated
    skipped: int = 0  # of those, dropped from the loss (the rest were replaced by resampled ones)
    resample_tries: int = 0  # extra generations of fresh prompts
    resampled: int = 0  # teaching groups they brought into the batch
    trained: int = 0  # groups in the loss


class GroupStats:
    def __init__(self) -> None:
        self.total, self.window = GroupCounts(), GroupCounts()

    def add(self, **counts: int) -> None:
        for key, value in counts.items():
            for bucket in (self.total, self.window):
                setattr(bucket, key, getattr(bucket, key) + value)

    def metrics(self) -> dict[str, float]:
        """`groups/<count>` since the last call (one generation batch per step: that step's)."""
        out = {f"groups/{key}": float(value) for key, value in asdict(self.window).items()}
        self.window = GroupCounts()
        return out

    def summary(self) -> dict[str, int]:
        return asdict(self.total)


def zero_std_rows(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(rows,) bool: the row's group had one reward for all its completions, by TRL's test (sum_then_normalize: the
    weighted total, unscorable rows left out of the std; `torch.isclose(std, 0)`)."""
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    count = (~torch.isnan(grouped)).sum(dim=1)
    # TRL's nanstd: the unbiased std over the scorable rows
    var = torch.nansum((grouped - mean) ** 2, dim=1) / (count - 1).clamp(min=1)
    zero = torch.isclose(var.sqrt(), torch.zeros_like(var))
    return zero.repeat_interleave(num_generations)


def group_labels(zero: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(rows,) long: each row's group index, -1 for the rows of groups that teach nothing."""
    groups = torch.arange(zero.numel(), device=zero.device) // num_generations
    return torch.where(zero, torch.full_like(groups, -1), groups)


# ---- skip: the kept rows in micro-batches, each with its loss scale ----------------------------------------------


def skip_rows(chunks: list[dict[str, Any]], loss_type: str, gather_sum: Any = None) -> list[dict[str, Any]]:
    """The micro-batches of a generation batch without the rows labelled -1: the kept rows, groups next to each
    other, fill micro-batches of the original size in order; each gets `SCALE_KEY`. `gather_sum(t)` sums a count
    over processes (for num_items_in_batch); None: this process only."""
    whole = {key: _join([chunk[key] for chunk in chunks]) for key in chunks[0]}
    labels = whole.pop(GROUP_KEY)
    kept = (labels >= 0).nonzero().squeeze(1)
    # groups next to each other (stable: rows within a group keep TRL's shuffled order), so whole groups share a
    # micro-batch where its size allows (the shared prefix then forwards each prompt once)
    kept = kept[torch.sort(labels[kept], stable=True).indices]
    size, steps = len(chunks[0][GROUP_KEY]), len(chunks)
    loss_mask = _loss_mask(whole)
    kept_rows, kept_tokens = kept.numel(), loss_mask[kept].sum()
    if "num_items_in_batch" in whole:
        local = loss_mask[kept].sum()
        whole["num_items_in_batch"] = gather_sum(local) if gather_sum is not None else local
    out = []
    for step in range(steps):
        rows = kept[step * size:(step + 1) * size]
        if rows.numel() == 0:
            # nothing left for this micro-batch: one skipped row with loss scale 0 (no loss, no gradient), its tokens
            # left unmasked so TRL's per-micro-batch metrics (entropy, clip ratios) measure the policy, not zeros
            chunk = _take(whole, (labels < 0).nonzero()[:1].squeeze(1))
            chunk[SCALE_KEY] = torch.tensor(0.0)
        else:
            chunk = _take(whole, rows)
            chunk[SCALE_KEY] = _scale(loss_type, rows.numel(), kept_rows, _loss_mask(chunk).sum(), kept_tokens, steps)
        out.append(chunk)
    return out


def _scale(loss_type: str, rows: int, kept_rows: int, tokens: torch.Tensor, kept_tokens: torch.Tensor,
           steps: int) -> torch.Tensor:
    """TRL normalises a micro-batch by its own rows (or tokens) as one of `steps` equal slices; the kept groups'
    loss wants it normalised as a part of all kept rows (tokens) split into `steps` equal slices."""
    if loss_type in _BY_ROWS:
        return torch.tensor(rows * steps / kept_rows)
    if loss_type in _BY_TOKENS:
        return (tokens.clamp(min=1) * steps / kept_tokens.clamp(min=1)).float().cpu()
    return torch.tensor(1.0)  # num_items_in_batch was recounted over the kept rows


def _loss_mask(batch: dict[str, Any]) -> torch.Tensor:
    mask = batch["completion_mask"]
    return mask * batch["tool_mask"] if batch.get("tool_mask") is not None else mask


def _join(values: list[Any]) -> Any:
    first = values[0]
    if first is None or (isinstance(first, torch.Tensor) and first.ndim == 0):
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    return [item for value in values for item in value]


def _take(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    out = {}
    for key, value in batch.items():
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            out[key] = value
        elif isinstance(value, torch.Tensor):
            out[key] = value[rows.to(value.device)]
        else:
            out[key] = [value[i] for i in rows.tolist()]
    return out


# ---- resample: generation outputs of several prompt batches as one ------------------------------------------------


def concat_outputs(outputs: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """TRL's generation outputs (one dict each) as one: prompt columns left-padded to the widest, completion
    columns right-padded; num_items_in_batch summed."""
    prompt_width = max(o["prompt_ids"].size(1) for o in outputs)
    completion_width = max(o["completion_ids"].size(1) for o in outputs)
    joined: dict[str, Any] = {}
    for key in outputs[0]:
        values = [o[key] for o in outputs]
        first = values[0]
        if not isinstance(first, torch.Tensor):
            raise ValueError(f"stage.zero_std_groups=resample: cannot join generation outputs holding {key}")
        if first.ndim == 0:
            joined[key] = sum(values)
        elif first.ndim == 1:
            joined[key] = torch.cat(values)
        elif key.startswith("prompt_"):
            fill = pad_token_id if key == "prompt_ids" else 0
            joined[key] = torch.cat([_pad(v, prompt_width, fill, left=True) for v in values])
        else:  # completion-shaped: ids, masks, per-token log-probs
            fill = pad_token_id if key == "completion_ids" else 0
            joined[key] = torch.cat([_pad(v, completion_width, fill, left=False) for v in values])
    return joined


def _pad(value: torch.Tensor, width: int, fill: float, left: bool) -> torch.Tensor:
    missing = width - value.size(1)
    if missing == 0:
        return value
    pad = torch.full((value.size(0), missing, *value.shape[2:]), fill, dtype=value.dtype, device=value.device)
    return torch.cat([pad, value] if left else [value, pad], dim=1)


def fill_groups(output: dict[str, Any], num_generations: int, wanted: int) -> tuple[dict[str, Any], int]:
    """The first `wanted` groups of `output`, teaching ones first, as one output with GROUP_KEY relabelled in
    order; returns it and how many teaching groups it holds (the rest are labelled -1, to be skipped)."""
    labels = output[GROUP_KEY].view(-1, num_generations)[:, 0]
    teaching = (labels >= 0).nonzero().squeeze(1).tolist()
    idle = (labels < 0).nonzero().squeeze(1).tolist()
    chosen = (teaching + idle)[:wanted]
    rows = torch.tensor([g * num_generations + i for g in chosen for i in range(num_generations)], dtype=torch.long)
    out = _take(output, rows)
    taught = min(len(teaching), wanted)
    group_of = torch.arange(len(chosen)).repeat_interleave(num_generations)
    out[GROUP_KEY] = torch.where(group_of < taught, group_of, torch.full_like(group_of, -1)).to(labels.device)
    return out, taught
