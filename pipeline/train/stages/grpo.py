"""GRPO: for each prompt sample a group of completions, score them, and use the group-normalised reward as the
advantage of every token in a completion (no value network). With beta=0 there is no reference model and no KL
term; the loss is the clipped policy-ratio objective (TRL's loss_type, default dapo: normalised by all tokens).

    python pipeline/run.py                                     # embedded default: arithmetic, SmolLM2, CPU
    python pipeline/run.py model=qwen2.5_0.5b_instruct data=gsm8k reward=correctness_format hw=single_4090
"""

from __future__ import annotations

import logging
from typing import Any

from trl import GRPOConfig

from pipeline.config.plan import RunPlan
from pipeline.config.stage_schemas import GenerationEngine, GRPOStageConfig, RLOOStageConfig
from pipeline.rewards import build_reward_funcs, place_reward_models
from pipeline.train.checkpoint.environment_state import EnvironmentState
from pipeline.train.levers.grpo_trainer import GRPOLevers, LeveredGRPOTrainer
from pipeline.train.stages.agent import agent_inputs
from pipeline.train.stages.finish import finish, train
from pipeline.train.stages.prepare import prepare, trainer_inputs
from pipeline.train.stages.trl_args import trl_args

log = logging.getLogger(__name__)


def run_grpo(plan: RunPlan) -> dict[str, Any]:
    cfg = plan.cfg
    if plan.micro_batch > cfg.hw.micro_batch:  # only split_batch's rounding to whole groups makes it larger
        log.info("stage.shared_prefix: micro-batches of %d rows (hw.micro_batch=%d), whole groups of %d, so each "
                 "group's prompt is forwarded once", plan.micro_batch, cfg.hw.micro_batch, cfg.stage.num_generations)
    reward_funcs, weights = build_reward_funcs(cfg.reward.terms)
    prep = prepare(plan)
    # tools and environments (env group, stage.tools) for TRL's own multi-turn loop; None: single-turn
    agent = agent_inputs(plan, prep)
    stage = cfg.stage
    args = GRPOConfig(**trl_args(
        plan,
        **rollout_args(cfg, weights),
        loss_type=stage.loss_type.value,
        scale_rewards=stage.scale_rewards.value,
        importance_sampling_level=stage.importance_sampling_level.value,
        **({"max_tool_calling_iterations": agent.max_tool_calling_iterations} if agent else {}),
    ))
    levers = GRPOLevers(merge_lora=cfg.hw.merge_lora_for_generation, fast_sampling=cfg.hw.fast_sampling,
                        bf16_sampling=cfg.hw.bf16_sampling,
                        packed_linears=cfg.hw.packed_linears,
                        shared_prefix=stage.shared_prefix, prefill_once=stage.prefill_once,
                        drop_finished_rows=stage.drop_finished_rows,
                        zero_std_groups=stage.zero_std_groups.value, resample_tries=stage.resample_tries)
    trainer = LeveredGRPOTrainer(args=args, reward_funcs=reward_funcs, levers=levers, **trainer_inputs(plan, prep),
                                 **(agent.trainer_kwargs if agent else {}), tool_stats=agent.stats if agent else None)
    # reward models (reward.terms.*.model) score on this rank's training device, frozen, loaded at their first call
    place_reward_models(reward_funcs, trainer.accelerator.device)
    if agent and agent.trainer_kwargs.get("environment_factory"):
        # before CheckpointCallback, whose marker lists the checkpoint's files
        trainer.callback_handler.callbacks.insert(0, EnvironmentState(prep.checkpoint))
    train(plan, trainer, prep, bf16_frozen=True)
    # summary.json: every tool's calls, failures, timeouts and truncated results over the run; groups skipped and
    # resampled (stage.zero_std_groups)
    extra = {"tools": agent.stats.summary()} if agent else {}
    if stage.zero_std_groups.value != "keep":
        extra["groups"] = trainer.groups.summary()
    return finish(plan, trainer, prep, extra)


def rollout_args(cfg: Any, weights: list[float]) -> dict[str, Any]:
    """What GRPOConfig and RLOOConfig share: sampling, the clipped ratio, the KL weight, reward weights, the engine."""
    stage = cfg.stage
    return dict(
        num_generations=stage.num_generations,
        max_completion_length=stage.max_completion_length,
        temperature=stage.temperature,
        top_p=stage.top_p,
        beta=stage.beta,
        epsilon=stage.epsilon,
        epsilon_high=stage.epsilon_high,
        num_iterations=stage.num_iterations,
        mask_truncated_completions=stage.mask_truncated_completions,
        reward_weights=weights,
        # transformers' paged continuous batching instead of generate() (CUDA only; slower on CPU, bench/README)
        use_transformers_continuous_batching=cfg.hw.continuous_batching,
        **generation_engine(stage),
    )


def generation_engine(stage: GRPOStageConfig | RLOOStageConfig) -> dict[str, Any]:
    """GRPOConfig (and RLOOConfig) arguments for stage.generation; vLLM colocate shares the training GPU (TRL syncs
    weights)."""
    if stage.generation != GenerationEngine.vllm_colocate:
        return {}
    return {"use_vllm": True, "vllm_mode": "colocate",
            "vllm_gpu_memory_utilization": stage.vllm_gpu_memory_utilization}
