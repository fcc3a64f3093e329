"""GRPO rules about groups that teach nothing (`stage.zero_std_groups`, pipeline/train/levers/zero_std_groups.py):
the combinations where skipping or resampling would change the loss's meaning, or cannot run, are refused here."""

from __future__ import annotations

from pipeline.config.derived import world_size
from pipeline.config.enums import RewardScaling, ZeroStdGroups
from pipeline.config.schema import RunConfig


def zero_std_problems(cfg: RunConfig) -> list[str]:
    stage = cfg.stage
    mode = getattr(stage, "zero_std_groups", ZeroStdGroups.keep)
    if mode == ZeroStdGroups.keep:
        return []
    trl, problems = dict(stage.trl), []
    key = f"stage.zero_std_groups={mode.value}"
    if trl.get("multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize":
        problems.append(f"{key} with stage.trl.multi_objective_aggregation={trl['multi_objective_aggregation']}: "
                        "there a group with equal rewards still gets a non-zero advantage (each term is normalised "
                        "over the batch), so it does teach. Use stage.zero_std_groups=keep, or drop that key.")
    if trl.get("entropy_coef", 0.0) or trl.get("use_adaptive_entropy") or trl.get("top_entropy_quantile", 1.0) < 1:
        problems.append(f"{key} with an entropy bonus or mask (stage.trl.entropy_coef / use_adaptive_entropy / "
                        "top_entropy_quantile): TRL computes them per micro-batch, so the loss over the kept groups "
                        "would depend on how rows are split. Use stage.zero_std_groups=keep with those.")
    if mode != ZeroStdGroups.resample:
        return problems
    if stage.resample_tries < 1:
        problems.append(f"stage.resample_tries={stage.resample_tries}: resample needs at least 1 extra generation "
                        "per batch (e.g. stage.resample_tries=2), or stage.zero_std_groups=skip.")
    if world_size(cfg) > 1:
        problems.append(f"{key} with {world_size(cfg)} processes (hw={cfg.hw.name}): TRL spreads each group over "
                        "the processes, and every process would have to draw and generate the same fresh prompts in "
                        "lockstep; only one process is supported. Use stage.zero_std_groups=skip (it works on any "
                        "number of processes), or a one-process hw profile.")
    if stage.scale_rewards == RewardScaling.batch:
        problems.append(f"{key} with stage.scale_rewards=batch: each refill's advantages would be scaled by the "
                        "std of a different batch. Use stage.scale_rewards=group (or none), or "
                        "stage.zero_std_groups=skip.")
    return problems
