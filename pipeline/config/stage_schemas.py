"""Schemas of the `stage` group: the knobs of each training method (one option file per stage in conf/stage/).
Which schema a stage name uses, and everything else about a stage, is in `pipeline.config.stage_table`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from pipeline.config.enums import (
    DPOLoss,
    GenerationEngine,
    GRPOLoss,
    ImportanceSampling,
    KTOLoss,
    RewardScaling,
    ZeroStdGroups,
)
from pipeline.config.frozen import Schema


@dataclass
class StageConfig(Schema):
    # The stage table's key (pipeline/config/stage_table.py); set by the stage option file.
    name: str = MISSING
    # 2e-5 suits full fine-tuning; LoRA usually wants 1e-4..2e-4.
    learning_rate: float = 2e-5
    # Any transformers scheduler name: cosine decays to 0 by the last step, constant keeps lr fixed, linear...
    lr_scheduler: str = "cosine"
    # Fraction of steps spent ramping lr up from 0.
    warmup_ratio: float = 0.0
    num_epochs: float = 1.0
    # Global batch: sequences per optimizer step over all processes (GRPO: completions, so prompts per step =
    # batch_size / num_generations). The hw profile splits it into micro-batches and accumulation.
    batch_size: int = 16
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    logging_steps: int = 1
    # Save a resumable checkpoint every N steps; 0 saves only the final model.
    save_steps: int = 0
    # Tokens generated per held-out problem when measuring accuracy (greedy).
    eval_max_new_tokens: int = 64
    # Warm-up as a number of steps; > 0 wins over warmup_ratio (recipes often give steps, e.g. 200).
    warmup_steps: int = 0
    # Any other field of the stage's TRL config, passed as is: stage.trl.<field>=value (e.g. stage.trl.delta=1.5).
    # Names are checked against the installed TRL before anything loads; fields with a key of ours are refused.
    trl: dict[str, Any] = field(default_factory=dict)


@dataclass
class SFTStageConfig(StageConfig):
    name: str = "sft"
    # Tokens per example: longer keeps more of each example, costs memory quadratically in attention.
    max_length: int = 1024
    # Concatenate short examples into full rows: faster on mixed lengths, changes batch statistics.
    packing: bool = False
    # Run each micro-batch's rows as one sequence (positions restart per row) so no compute goes to padding; same
    # loss. Used when every row fits max_length (TRL cannot truncate padding-free rows).
    padding_free: bool = True


@dataclass
class DPOStageConfig(StageConfig):
    name: str = "dpo"
    # DPO is sensitive: 5e-6 full / 5e-5 LoRA are common starting points.
    learning_rate: float = 5e-6
    # Preference pairs per optimizer step over all processes.
    batch_size: int = 8
    # Strength of the pull towards the reference model: higher stays closer to it.
    beta: float = 0.1
    # sigmoid (original DPO), ipo, hinge, robust, apo_zero, sigmoid_norm ... (TRL's DPO loss types).
    loss_type: DPOLoss = DPOLoss.sigmoid
    # Prompt + answer tokens.
    max_length: int = 1024
    label_smoothing: float = 0.0
    # Forward each prompt once per pair in the policy and reference passes ([prompt, chosen, rejected] as one packed
    # row with a shared-prefix mask, train/levers/shared_prefix_dpo.py); per-row where it can't apply. On by default:
    # exact (tests/train/levers/test_shared_prefix_dpo.py), faster in every measurement (bench/README).
    shared_prefix: bool = True
    # Reference log-probs scored once per row before training (TRL's precompute_ref_log_probs), not in every step:
    # null = when one process reads its rows more than once (fewer forwards, no reference model kept); true/false.
    precompute_ref_log_probs: bool | None = None


@dataclass
class GRPOStageConfig(StageConfig):
    name: str = "grpo"
    # 1e-6 for full fine-tuning; LoRA tolerates 1e-5..1e-4.
    learning_rate: float = 1e-6
    # Completions per optimizer step over all processes (= prompts per step x num_generations).
    batch_size: int = 32
    # Completions per prompt (the group): more gives better advantage estimates, costs generation time.
    num_generations: int = 8
    # Longer allows more reasoning; generation time grows linearly.
    max_completion_length: int = 256
    # KL coefficient; 0 needs no reference model (saves memory and a forward pass).
    beta: float = 0.0
    # PPO-style clip range; epsilon_high (null = epsilon) widens the upper side (DAPO clip-higher).
    epsilon: float = 0.2
    epsilon_high: float | None = None
    # Policy updates per generated batch (mu); >1 reuses completions, needs old log-probs.
    num_iterations: int = 1
    # grpo | dapo | dr_grpo | bnpo | cispo | sapo | luspo | vespo (TRL loss types; presets: algo=<name>).
    loss_type: GRPOLoss = GRPOLoss.dapo
    # group | batch | none: how rewards are normalised into advantages.
    scale_rewards: RewardScaling = RewardScaling.group
    # token (one ratio per token) | sequence (GSPO: one length-normalised ratio per completion).
    importance_sampling_level: ImportanceSampling = ImportanceSampling.token
    # 1.0 samples the model's own distribution; lower explores less.
    temperature: float = 1.0
    top_p: float = 1.0
    # Give zero loss to completions cut at max_completion_length.
    mask_truncated_completions: bool = False
    # Groups whose completions all got one reward teach nothing: keep (TRL's way) | skip them from the loss (the
    # same loss as over the other groups alone, less compute) | resample fresh prompts to fill the batch (one process).
    zero_std_groups: ZeroStdGroups = ZeroStdGroups.keep
    # resample: extra generations of fresh prompts per batch at most; what is still missing is skipped.
    resample_tries: int = 2
    # Forward each prompt once per group in the log-prob passes (prompt + its completions as one packed row with a
    # shared-prefix mask; same numbers as per-row, train/levers/shared_prefix.py); per-row where it can't apply.
    shared_prefix: bool = False
    # Prefill each distinct prompt once in generation and copy its KV cache to its rows (same samples,
    # train/levers/prefill_once.py); transformers generation only, not ZeRO-3. On: exact, saves G-1 of G prefills.
    prefill_once: bool = True
    # Finished rows leave the decode batch (same distribution, levers/compact_decoding.py), else generate's loop.
    drop_finished_rows: bool = False
    # transformers | vllm_colocate (CUDA + `pip install -e '.[gpu]'`; TRL syncs the policy, LoRA merged, each step)
    generation: GenerationEngine = GenerationEngine.transformers
    # Share of GPU memory vLLM reserves for its weights and KV cache in colocate mode.
    vllm_gpu_memory_utilization: float = 0.3
    # Your own tools, on top of the env group's: dotted paths `pkg.module.function` to functions with type hints and
    # a Google-style docstring (TRL shows the model their JSON schema); they run under the env group's limits.
    tools: list[str] = field(default_factory=list)


@dataclass
class GroupPrefStageConfig(StageConfig):
    """Offline listwise preference on scored groups (pipeline/train/stages/group_pref.py): no generation."""

    name: str = "group_pref"
    # DPO-like: 5e-6 full, ~5e-5 LoRA.
    learning_rate: float = 5e-6
    # Groups (prompt + all its responses) per optimizer step over all processes.
    batch_size: int = 8
    # Scale of the implicit reward r(y) = beta * log(pi(y) / pi_ref(y)); higher stays closer to the reference.
    beta: float = 0.1
    # Margin the chosen reward must beat the strongest rejected one by; 0 stops pushing once it is ahead.
    alpha: float = 1.0
    # hinge: max(0, max_rejected r - r_chosen + alpha); dpo_pairs: DPO's -log sigmoid over (chosen, each rejected).
    loss: str = "hinge"
    # Softmax-smoothed max over the rejected rewards with temperature 1/lambda; null = the hard max.
    smooth_lambda: float | None = None
    # Prompt + one response, in tokens; longer responses are cut at the end.
    max_length: int = 1024
    # Responses kept per group (the top-scored one and the highest-scored rejected ones).
    max_responses: int = 8


@dataclass
class KTOStageConfig(StageConfig):
    """Kahneman-Tversky Optimization on unpaired rows (prompt, completion, label): no pairs needed."""

    name: str = "kto"
    # DPO-like: 5e-6 full, ~5e-5 LoRA.
    learning_rate: float = 5e-6
    # Rows per optimizer step over all processes; each micro-batch needs >= 2 rows (its KL estimate pairs them).
    batch_size: int = 8
    # Strength of the pull towards the reference model: higher stays closer to it.
    beta: float = 0.1
    # kto | apo_zero_unpaired
    loss_type: KTOLoss = KTOLoss.kto
    # Loss weights of desirable / undesirable rows: the paper keeps weight x count within 1..4/3 of each other.
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    # Prompt + completion tokens.
    max_length: int = 1024


@dataclass
class ORPOStageConfig(StageConfig):
    """Odds-Ratio Preference Optimization: SFT loss on chosen + beta x odds-ratio loss; no reference model."""

    name: str = "orpo"
    # The ORPO paper: 8e-6 full fine-tuning (Mistral-7B); LoRA ~1e-4.
    learning_rate: float = 8e-6
    # Preference pairs per optimizer step over all processes.
    batch_size: int = 8
    # lambda of the paper: weight of the odds-ratio term against the SFT term (paper: 0.1).
    beta: float = 0.1
    # Prompt + answer tokens.
    max_length: int = 1024


@dataclass
class SimPOStageConfig(StageConfig):
    """SimPO through TRL's CPO trainer: length-normalised log-prob margin, no reference model."""

    name: str = "simpo"
    # The SimPO paper: 3e-7..1e-6 full fine-tuning; LoRA ~5e-5.
    learning_rate: float = 1e-6
    # Preference pairs per optimizer step over all processes.
    batch_size: int = 8
    # Reward scale (the paper: 2.0-2.5).
    beta: float = 2.0
    # Target margin gamma between chosen and rejected rewards (the paper: gamma/beta ~ 0.5, so ~1.0-1.4).
    simpo_gamma: float = 1.0
    # Weight of an extra NLL term on chosen: 0 is pure SimPO; > 0 mixes in CPO's behaviour cloning.
    cpo_alpha: float = 0.0
    # Prompt + answer tokens.
    max_length: int = 1024


@dataclass
class RMStageConfig(StageConfig):
    """Reward model: a scalar head trained on (prompt, chosen, rejected) with the Bradley-Terry loss."""

    name: str = "rm"
    # InstructGPT's RM: ~9e-6 full fine-tuning; LoRA ~1e-4.
    learning_rate: float = 1e-5
    # Preference pairs per optimizer step over all processes.
    batch_size: int = 8
    # Prompt + answer tokens.
    max_length: int = 1024
    # Pairs held out of training to measure accuracy (chosen scored above rejected) into summary.json.
    heldout_pairs: int = 32


@dataclass
class RLOOStageConfig(StageConfig):
    """RLOO through TRL's RLOOTrainer: GRPO's rollouts and rewards, but each completion's baseline is the mean reward
    of the *other* completions of its prompt (leave-one-out), and the KL term is part of the reward. No tools (TRL's
    RLOOTrainer has no multi-turn loop) and none of GRPO's levers (they patch GRPOTrainer); algo= presets are GRPO's."""

    name: str = "rloo"
    # 1e-6 for full fine-tuning; LoRA tolerates 1e-5..1e-4 (as GRPO).
    learning_rate: float = 1e-6
    # Completions per optimizer step over all processes (= prompts per step x num_generations).
    batch_size: int = 32
    # Completions per prompt: the leave-one-out baseline needs >= 2; more gives a less noisy baseline.
    num_generations: int = 8
    max_completion_length: int = 256
    # KL coefficient (TRL's default 0.05; the RLOO paper keeps a KL penalty); 0 loads no reference model.
    beta: float = 0.05
    # PPO-style clip range of the ratio when num_iterations > 1 reuses completions; epsilon_high null = epsilon.
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1
    # Scale advantages to mean 0, std 1 over each generation batch (TRL's default: off, plain RLOO).
    normalize_advantages: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    # Give zero loss to completions cut at max_completion_length.
    mask_truncated_completions: bool = False
    # transformers | vllm_colocate (as GRPO: CUDA + `pip install -e '.[gpu]'`)
    generation: GenerationEngine = GenerationEngine.transformers
    vllm_gpu_memory_utilization: float = 0.3


@dataclass
class DistillStageConfig(StageConfig):
    """On-policy distillation (TRL's DistillationTrainer): the student samples a completion per prompt, the frozen
    teacher scores each token, the loss is the generalized JSD of their next-token distributions (no lmbda in 1.16)."""

    name: str = "distill"
    # Whose distribution the student learns: a model option (conf/model/<name>), a model dir, a run dir (its
    # final/), a hub id, or chain:<step>. Must share the student's tokenizer (checked before weights load).
    teacher: str = ""
    # TRL's default for full fine-tuning; LoRA tolerates 1e-5..1e-4.
    learning_rate: float = 1e-6
    # Prompts (= completions: one each) per optimizer step over all processes.
    batch_size: int = 16
    max_completion_length: int = 256
    # 0 forward KL (covers all the teacher's modes), 1 reverse KL (seeks its main mode; TRL's default), 0.5 JSD.
    beta: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class ChainStageConfig(Schema):
    """Stages run one after another in one run dir (pipeline/train/stages/chain.py); each starts from the previous
    policy's final adapter/model (not a reward model's). A string "chain:<name>" in a later step's config becomes that
    earlier step's final/ dir. Only the sub-stages have training knobs: a stray key here fails at compose time."""

    name: str = "sft_then_grpo"
    # Sub-stage names, in order; each writes <run dir>/<i>_<name>/ and is skipped when it already finished.
    stages: list[str] = field(default_factory=lambda: ["sft", "grpo"])
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    dpo: DPOStageConfig = field(default_factory=DPOStageConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    rloo: RLOOStageConfig = field(default_factory=RLOOStageConfig)
    kto: KTOStageConfig = field(default_factory=KTOStageConfig)
    orpo: ORPOStageConfig = field(default_factory=ORPOStageConfig)
    simpo: SimPOStageConfig = field(default_factory=SimPOStageConfig)
    rm: RMStageConfig = field(default_factory=RMStageConfig)
    distill: DistillStageConfig = field(default_factory=DistillStageConfig)
    # Per sub-stage overrides of data keys, e.g. {sft: {path: sft.jsonl}}; by default every stage reads `data`.
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
