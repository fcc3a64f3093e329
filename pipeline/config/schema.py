"""Typed schemas for every config group, registered in Hydra's ConfigStore.

The schema dataclass owns types and defaults; YAML options under conf/ override only what differs. Because each
group node is typed, a typo'd key, a wrong type or an unknown enum value fails while Hydra composes, before
anything heavy is imported. Rules that involve more than one field live in `pipeline.config.checks`.

This module must stay light: it is imported by `run.py` before torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig


class ModelSource(str, Enum):
    pretrained = "pretrained"  # transformers checkpoint: hub id or local directory
    gguf = "gguf"  # dequantised once from a GGUF file into a safetensors cache
    random = "random"  # built from `arch` with random weights (tests, benchmarks)


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class GenerationEngine(str, Enum):
    transformers = "transformers"  # TRL's model.generate in the training process, any device
    vllm_colocate = "vllm_colocate"  # vLLM in the training process on the same GPU (extra `gpu`)


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Launcher(str, Enum):
    # How run.py re-launches itself when the hw profile wants more than one process (pipeline/launch.py).
    accelerate = "accelerate"
    deepspeed = "deepspeed"
    torchrun = "torchrun"


class PeftMethod(str, Enum):
    lora = "lora"
    full = "full"


class QuantMethod(str, Enum):
    none = "none"
    int8 = "int8"
    nf4 = "nf4"


class DataFormat(str, Enum):
    auto = "auto"  # detected from the columns of the first row
    messages = "messages"  # SFT: [{role, content}, ...] ending with an assistant turn
    alpaca = "alpaca"  # SFT: instruction, input, output
    prompt_completion = "prompt_completion"  # SFT: prompt, completion
    preference = "preference"  # DPO: prompt, chosen, rejected
    prompt_answer = "prompt_answer"  # GRPO: prompt, answer (answer goes to the rewards)
    # --- seed formats (issue 4) ---
    sharegpt = "sharegpt"  # SFT: conversations [{from: human|gpt|system, value}] (or role/content)
    llamafactory_dpo = "llamafactory_dpo"  # DPO: instruction (+input), output: [chosen, rejected]
    gsm8k = "gsm8k"  # GRPO/SFT: question, answer "...reasoning... #### 42" (gold = the text after ####)
    s1k = "s1k"  # GRPO/SFT: question, solution (+ a thinking trajectory and attempt for SFT)
    mcq = "mcq"  # GRPO/SFT: question, option_A..option_D, correct_answer (A-D), reasoning
    scored_groups = "scored_groups"  # group_pref/DPO: prompt, responses[], scores[] (top score = chosen)


class OnBadRow(str, Enum):
    error = "error"  # stop at the first bad row, naming file, line and field
    skip = "skip"  # drop bad rows, count them per reason and report the counts


@dataclass
class ModelConfig:
    # Short label used in summaries.
    name: str = MISSING
    # Hub id or local directory; for source=gguf the folder holding `gguf_file` ("pkg:NAME" = an installed
    # package's folder); unused for source=random.
    path: str = ""
    source: ModelSource = ModelSource.pretrained
    # File name inside `path` for source=gguf.
    gguf_file: str | None = None
    # Tokenizer location when it differs from `path` ("pkg:pipeline/assets/..." works too).
    tokenizer: str | None = None
    # transformers config kwargs for source=random (must contain model_type).
    arch: dict[str, Any] = field(default_factory=dict)
    # Attention kernel: sdpa is fast everywhere; flash_attention_2 needs the flash-attn package and a GPU.
    attn_implementation: str = "sdpa"
    # Executes code shipped with the checkpoint: off unless you trust the model's source.
    trust_remote_code: bool = False
    revision: str | None = None


@dataclass
class StageConfig:
    # sft | dpo | grpo: picks the stage runner; set by the stage option file.
    name: str = MISSING
    learning_rate: float = 2e-5
    # Any transformers scheduler name: constant, linear, cosine, constant_with_warmup...
    lr_scheduler: str = "cosine"
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


@dataclass
class SFTStageConfig(StageConfig):
    name: str = "sft"
    # Longer keeps more of each example, costs memory quadratically in attention.
    max_length: int = 1024
    # Concatenate short examples into full rows: faster on mixed lengths, changes batch statistics.
    packing: bool = False
    # Run each micro-batch's rows as one sequence (positions restart per row) so no compute goes to padding; same
    # loss. Used when every row fits max_length (TRL cannot truncate padding-free rows).
    padding_free: bool = True


@dataclass
class DPOStageConfig(StageConfig):
    name: str = "dpo"
    learning_rate: float = 5e-6
    batch_size: int = 8
    # Strength of the pull towards the reference model: higher stays closer to it.
    beta: float = 0.1
    # sigmoid (original DPO), ipo, hinge, ... (any TRL DPO loss type).
    loss_type: str = "sigmoid"
    max_length: int = 1024
    label_smoothing: float = 0.0


@dataclass
class GRPOStageConfig(StageConfig):
    name: str = "grpo"
    learning_rate: float = 1e-6
    batch_size: int = 32
    # Completions per prompt (the group): more gives better advantage estimates, costs generation time.
    num_generations: int = 8
    max_completion_length: int = 256
    # KL coefficient; 0 needs no reference model (saves memory and a forward pass).
    beta: float = 0.0
    # PPO-style clip range; epsilon_high (null = epsilon) widens the upper side (DAPO clip-higher).
    epsilon: float = 0.2
    epsilon_high: float | None = None
    # Policy updates per generated batch (mu); >1 reuses completions, needs old log-probs.
    num_iterations: int = 1
    # grpo | dapo | dr_grpo | bnpo ... (TRL loss types).
    loss_type: str = "dapo"
    # group | batch | none: how rewards are normalised into advantages.
    scale_rewards: str = "group"
    temperature: float = 1.0
    top_p: float = 1.0
    # Give zero loss to completions cut at max_completion_length.
    mask_truncated_completions: bool = False
    # transformers | vllm_colocate (CUDA + `pip install -e '.[gpu]'`; TRL syncs the policy, LoRA merged, each step)
    generation: GenerationEngine = GenerationEngine.transformers
    # Share of GPU memory vLLM reserves for its weights and KV cache in colocate mode.
    vllm_gpu_memory_utilization: float = 0.3


@dataclass
class GroupPrefStageConfig(StageConfig):
    """Offline listwise preference on scored groups (pipeline/stages/group_pref.py): no generation."""

    name: str = "group_pref"
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
class ChainStageConfig(StageConfig):
    """Stages run one after another in one run dir (pipeline/stages/chain.py); each starts from the previous
    one's final adapter/model. The inherited StageConfig fields are unused: every sub-stage has its own."""

    name: str = "sft_then_grpo"
    # Sub-stage names, in order; each writes <run dir>/<i>_<name>/ and is skipped when it already finished.
    stages: list[str] = field(default_factory=lambda: ["sft", "grpo"])
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    dpo: DPOStageConfig = field(default_factory=DPOStageConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    # Per sub-stage overrides of data keys, e.g. {sft: {path: sft.jsonl}}; by default every stage reads `data`.
    data: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ArithmeticConfig:
    # Built-in data set: "What is a + b?" problems generated from `seed`; eval problems never appear in train.
    num_train: int = 2000
    num_eval: int = 100
    # Operators drawn uniformly: any of + - *.
    ops: list[str] = field(default_factory=lambda: ["+"])
    low: int = 10
    high: int = 99
    seed: int = 1234


@dataclass
class DataConfig:
    name: str = MISSING
    # "builtin:arithmetic", a local .json/.jsonl/.csv file, or a `datasets` hub name.
    path: str = MISSING
    # Hub config name (e.g. "main" for gsm8k).
    subset: str | None = None
    split: str = "train"
    # Held-out data: a separate file/hub split, else `eval_size` rows split off the training data.
    eval_path: str | None = None
    eval_split: str | None = None
    eval_size: int = 0
    format: DataFormat = DataFormat.auto
    # Rename source columns to the ones the format expects, e.g. {question: prompt}. Not a struct node, so that
    # `data.columns={question: prompt}` on the command line can add names Hydra's struct mode would refuse.
    columns: dict[str, str] = field(default_factory=lambda: DictConfig({}, flags={"struct": False}))
    # Prepended as a system turn to every prompt; null keeps the chat template's own default.
    system_prompt: str | None = None
    # Python format string applied to the prompt text, e.g. "{prompt}\nAnswer with just the number.".
    prompt_template: str = "{prompt}"
    # Use only the first N training rows (smoke tests, quick looks).
    limit: int | None = None
    on_bad_row: OnBadRow = OnBadRow.error
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    # Example turns ([{role, content}, ...]) put between the system prompt and each question (one-shot prompts).
    few_shot: list[dict[str, str]] = field(default_factory=list)
    # File name in the run dir for held-out predictions as CSV (id,answer; MCQ letters); null = none.
    predictions_file: str | None = None


@dataclass
class RewardTermConfig:
    # Registry name of the reward function; null = the term's key.
    function: str | None = None
    weight: float = 1.0
    # Extra keyword arguments bound to the function (e.g. per_tag: 0.2).
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Dotted path of your own reward function (pkg.module.fn); it gets completions plus every data column as
    # keyword arguments. Wins over `function`.
    _target_: str | None = None


@dataclass
class RewardConfig:
    name: str = MISSING
    # term name -> term; each term is logged as rewards/<term name>/mean.
    terms: dict[str, RewardTermConfig] = field(default_factory=dict)


@dataclass
class PeftConfig:
    method: PeftMethod = PeftMethod.lora
    # Rank: higher is more expressive and costs more memory.
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # "all-linear" or a list of module names (q_proj, k_proj, ...).
    target_modules: Any = "all-linear"


@dataclass
class QuantConfig:
    method: QuantMethod = QuantMethod.none
    # nf4 only: quantise the quantisation constants too (~0.4 bit/param less, slightly slower).
    double_quant: bool = True


@dataclass
class HwConfig:
    name: str = MISSING
    device: Device = Device.cpu
    num_processes: int = 1
    num_nodes: int = 1
    precision: Precision = Precision.fp32
    # Sequences per forward/backward on one device; accumulation covers the rest of stage.batch_size.
    micro_batch: int = 8
    # Recompute activations in backward: less memory, ~30% more compute.
    gradient_checkpointing: bool = False
    # Problems generated at once during held-out evaluation.
    eval_batch: int = 50
    # GRPO generation speed-ups that sample the same distribution (pipeline/fast_generation.py): generate through
    # LoRA merged into a copy of the weights; inverse-CDF sampling instead of torch.multinomial.
    merge_lora_for_generation: bool = False
    fast_sampling: bool = False
    # CPU threads for torch; null keeps torch's default (all cores).
    torch_threads: int | None = None
    # Memory of one device in GB: the dry run's per-GPU estimate warns above it; null = not checked (CPU).
    memory_gb: float | None = None
    # Engine that starts the processes when num_processes x num_nodes > 1 and run.py was started plainly.
    launcher: Launcher = Launcher.accelerate
    # DeepSpeed hostfile ("host slots=N" lines) for multi-node runs; relative to the repo root or absolute.
    hostfile: str | None = None
    # Rendezvous of rank 0 for multi-node accelerate/torchrun; overridden by MASTER_ADDR / MASTER_PORT.
    master_addr: str = "127.0.0.1"
    master_port: int = 29500


@dataclass
class ZeroConfig:
    # DeepSpeed ZeRO profile; the hw profile picks a default, `zero=<name>` overrides it.
    name: str = "none"
    # 0 = DeepSpeed off (plain DDP when several processes); 1 optimizer, 2 + gradients, 3 + weights partitioned.
    stage: int = 0
    # JSON in ds_configs/ (or an absolute path); its "auto" values are filled from this config by the Trainer.
    config_file: str | None = None
    # Optimizer states (and for stage 3 weights) live in CPU RAM: fits bigger models, slower steps.
    offload_optimizer: bool = False
    offload_params: bool = False


@dataclass
class LoggingConfig:
    # Trackers for TRL's report_to: tensorboard always (event files in the run dir), wandb opt-in.
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    level: str = "INFO"
    wandb_project: str = "pipeline"
    # online | offline: offline writes to the run dir only; the key comes from WANDB_API_KEY, never config.
    wandb_mode: str = "offline"
    # Every N optimizer steps, generated completions (prompt, completion, each reward) go to TensorBoard as text
    # and to <run>/samples/completions.jsonl; 0 turns it off.
    samples_every: int = 5
    # Completions shown per sample event (the first ones of the latest generation batch).
    samples_shown: int = 4


@dataclass
class CheckpointConfig:
    # Complete checkpoints kept in <run>/checkpoints (the oldest are deleted); 0 keeps all. The save interval is
    # stage.save_steps.
    keep: int = 2
    # SIGTERM/SIGINT finish the current step, save a checkpoint and exit (Slurm sends SIGTERM before killing).
    save_on_signal: bool = True


@dataclass
class PathsConfig:
    # Run dirs land in <output_root>/<stage>/<run_id>/.
    output_root: str = "outputs"
    # Converted model caches (e.g. the GGUF default model as safetensors).
    cache_dir: str = ".cache/pipeline"


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    # A StageConfig subclass chosen by the stage option (typed there, so stage-specific keys are checked).
    stage: Any = MISSING
    data: DataConfig = MISSING
    reward: RewardConfig = MISSING
    peft: PeftConfig = MISSING
    quant: QuantConfig = MISSING
    hw: HwConfig = MISSING
    zero: ZeroConfig = MISSING
    logging: LoggingConfig = MISSING
    paths: PathsConfig = MISSING
    seed: int = 42
    # Positive: stop after this many optimizer steps (overrides stage.num_epochs).
    max_steps: int = -1
    # Shared by every rank of a launch (the launcher exports RUN_ID); a timestamp otherwise.
    run_id: str = "${oc.env:RUN_ID,${now:%Y%m%d_%H%M%S}}"
    # Everything the run writes lands here.
    output_dir: str = "${paths.output_root}/${stage.name}/${run_id}"
    # Start from a previous run's final/ dir: a LoRA adapter is merged into the base first, a full model replaces
    # model.path. Chained stages set it for each later stage.
    init_from: str | None = None
    # Print the composed config, the launch command and a per-GPU memory estimate; load and train nothing.
    dry_run: bool = False
    # null: start fresh; auto: the newest complete checkpoint in <output_dir>/checkpoints (fresh when none);
    # a path: that checkpoint. Give the same output_dir (or RUN_ID) as the interrupted run.
    resume: str | None = None
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"base_model": ModelConfig},
    "stage": {
        "base_sft": SFTStageConfig,
        "base_dpo": DPOStageConfig,
        "base_grpo": GRPOStageConfig,
        "base_group_pref": GroupPrefStageConfig,
        "base_chain": ChainStageConfig,
    },
    "data": {"base_data": DataConfig},
    "reward": {"base_reward": RewardConfig},
    "peft": {"base_peft": PeftConfig},
    "quant": {"base_quant": QuantConfig},
    "hw": {"base_hw": HwConfig},
    "zero": {"base_zero": ZeroConfig},
    "logging": {"base_logging": LoggingConfig},
    "paths": {"base_paths": PathsConfig},
}


def register_configs() -> None:
    """Store every schema so option files can start with `defaults: [base_<x>, _self_]`."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=group, name=name, node=node)
