"""Typed schemas for every config group, registered in Hydra's ConfigStore.

The schema dataclass owns types and defaults; YAML options under conf/ override only what differs. Because each
group node is typed, a typo'd key, a wrong type or an unknown enum value fails while Hydra composes, before
anything heavy is imported. Rules that involve more than one field live in `pipeline.config.checks`. This module
must stay light: it is imported by `run.py` before torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from pipeline.config.data_schema import DataConfig
from pipeline.config.enums import (
    Device,
    Launcher,
    ModelSource,
    OnRewardError,
    PeftInit,
    PeftMethod,
    Precision,
    QuantMethod,
    ShardEngine,
)
from pipeline.config.env_schema import EnvConfig
from pipeline.config.frozen import Schema
from pipeline.config.logging_schema import LoggingConfig
from pipeline.config.stage_table import stage_schemas
from pipeline.config.sweep_schema import SweepConfig


@dataclass
class ModelConfig(Schema):
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
    # Attention kernel: sdpa | eager | flash_attention_2 | flex_attention; sdpa is fast everywhere, the last two
    # need CUDA (flash_attention_2 also the flash-attn package): pipeline/config/gpu_levers.py.
    attn_implementation: str = "sdpa"
    # Executes code shipped with the checkpoint: off unless you trust the model's source.
    trust_remote_code: bool = False
    revision: str | None = None
    # Chat template for training, held-out evaluation, chat and export alike: a .jinja file or a shipped one
    # (pipeline/assets/chat_templates: chatml, qwen2.5 -- the latter renders tools); null keeps the tokenizer's.
    chat_template: str | None = None
    # Variables the template reads, e.g. {enable_thinking: false} for Qwen3; baked into the template, so the
    # exported tokenizer renders the same. Not a struct node, so the command line can add any name.
    chat_template_kwargs: dict[str, Any] = field(default_factory=lambda: DictConfig({}, flags={"struct": False}))


@dataclass
class RewardTermConfig(Schema):
    # Registry name of the reward function; null = the term's key.
    function: str | None = None
    weight: float = 1.0
    # Extra keyword arguments bound to the function (e.g. per_tag: 0.2).
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Dotted path of your own reward function (pkg.module.fn, sync or async); it gets completions plus every data
    # column as keyword arguments. Wins over `function`.
    _target_: str | None = None
    # A row whose score raises (or a judge that fails after its retries): stop = end the run naming the term, the
    # row and the error; zero = score 0 for that row, counted in rewards/<term>/failures and logged.
    on_error: OnRewardError = OnRewardError.stop
    # ---- reward_model and judge terms only (pipeline.rewards.model / .judge); null = that kind's default
    # reward_model: local dir (a saved sequence-classification model, a LoRA adapter dir, a stage=rm run) or hub
    # id. judge: the model name sent to the endpoint.
    model: str | None = None
    # judge: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (POST {url}/chat/completions).
    url: str | None = None
    # judge: name of the environment variable holding the API key (never the key itself); null = no key.
    api_key_env: str | None = None
    # judge: the request text, a format string over {prompt}, {completion}, {answer} (and any data column).
    prompt: str | None = None
    # judge: regex whose first group is the score in the reply; default: the number after "score:", else the first.
    score_regex: str | None = None
    # judge: replies are divided by this (10 -> scores in [0, 1]); a reply outside [0, max_score] is a failure.
    max_score: float | None = None
    # judge: seconds per request attempt (default 30).
    timeout_s: float | None = None
    # judge: requests in flight at once (default 8).
    max_concurrency: int | None = None
    # judge: extra attempts after a timeout, connection error, 429 or 5xx, with back-off 0.5 s, 1 s, 2 s... (default 2).
    retries: int | None = None
    # reward_model: completions per forward pass (default 16); more is faster and uses more memory.
    batch_size: int | None = None
    # reward_model: tokens kept per scored text (default 2048), the start of a longer prompt is cut.
    max_length: int | None = None


@dataclass
class RewardConfig(Schema):
    name: str = MISSING
    # term name -> term; each term is logged as rewards/<term name>/mean.
    terms: dict[str, RewardTermConfig] = field(default_factory=dict)


@dataclass
class PeftConfig(Schema):
    method: PeftMethod = PeftMethod.lora
    # Rank: higher is more expressive and costs more memory.
    r: int = 16
    # Scale = alpha / r; 2 x r is the common choice.
    alpha: int = 32
    dropout: float = 0.0
    # "all-linear" covers attention and MLP; a list of module names (["q_proj", "v_proj"]) is the cheap classic.
    target_modules: Any = "all-linear"
    # DoRA: each weight's magnitude trained apart from its LoRA direction (closer to full fine-tuning, slower step).
    use_dora: bool = False
    # rsLoRA: scale alpha / sqrt(r) instead of alpha / r, so a high rank still learns.
    use_rslora: bool = False
    # How A and B start: default | gaussian | pissa | olora (pipeline.config.enums.PeftInit).
    init: PeftInit = PeftInit.default
    # Modules trained in full beside the adapters and saved with them (names, e.g. [lm_head]).
    modules_to_save: list[str] = field(default_factory=list)


@dataclass
class QuantConfig(Schema):
    method: QuantMethod = QuantMethod.none
    # nf4 only: quantise the quantisation constants too (~0.4 bit/param less, slightly slower).
    double_quant: bool = True


@dataclass
class HwConfig(Schema):
    name: str = MISSING
    device: Device = Device.cpu
    num_processes: int = 1
    num_nodes: int = 1
    precision: Precision = Precision.fp32
    micro_batch: int = 8  # sequences per forward/backward on one device; accumulation covers the rest of a batch
    # Recompute activations in backward (less memory, ~30% more compute).
    gradient_checkpointing: bool = False
    eval_batch: int = 50  # problems generated at once in held-out evaluation
    # GRPO sampling, same distribution: LoRA merged into a weight copy; inverse-CDF; packed fp32 Linears (levers/)
    merge_lora_for_generation: bool = False
    fast_sampling: bool = False
    packed_linears: bool = False
    # bf16 on CPU (levers/bf16_frozen.py): frozen Linear weights held in bf16 while training, cast once (the same
    # numbers); bf16_sampling: GRPO samples on them under autocast too (else on the fp32 originals)
    bf16_frozen_weights: bool = True
    bf16_sampling: bool = False
    # CPU only, the same numbers (pipeline/train/levers/): TRL's fused LM head on the labelled positions, tiles folded
    # in place (2-5x cheaper); padding-free rows (SFT) attend one row at a time instead of under one block mask.
    lean_lm_head: bool = True
    row_attention: bool = True
    # CUDA-only levers (pipeline/config/gpu_levers.py refuses them elsewhere): Liger's fused kernels (TRL's
    # use_liger_kernel), TF32 matmuls (Ampere+), GRPO generation by transformers' continuous batching.
    liger_kernel: bool = False
    tf32: bool = False
    continuous_batching: bool = False
    torch_threads: int | None = None  # CPU threads for torch; null keeps torch's default (all cores)
    # Memory of one device in GB: the dry run's per-GPU estimate warns above it; null = not checked (CPU).
    memory_gb: float | None = None
    # Engine that starts the processes when num_processes x num_nodes > 1 and run.py was started plainly.
    launcher: Launcher = Launcher.accelerate
    # DeepSpeed hostfile ("host slots=N" lines) for multi-node runs; relative to the repo root or absolute.
    hostfile: str | None = None
    # Rank 0's rendezvous (multi-node accelerate/torchrun); MASTER_ADDR / MASTER_PORT override it.
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    # A rank that waits longer than this on the others (a collective they never join) fails, naming itself and
    # where it waited, instead of hanging; the first-time GGUF conversion and DeepSpeed's op builds fit well inside.
    collective_timeout_s: int = 1800


@dataclass
class ZeroConfig(Schema):
    # Sharding profile (DeepSpeed ZeRO or FSDP2); the hw profile picks a default, `zero=<name>` overrides it.
    name: str = "none"
    # deepspeed: the ZeRO stage below; fsdp2: PyTorch's fully_shard over all ranks (stage and config_file unused).
    engine: ShardEngine = ShardEngine.deepspeed
    # 0 = DeepSpeed off (plain DDP when several processes); 1 optimizer, 2 + gradients, 3 + weights partitioned.
    stage: int = 0
    # JSON in ds_configs/ (or an absolute path); its "auto" values are filled from this config by the Trainer.
    config_file: str | None = None
    # Optimizer states (and for stage 3 weights) live in CPU RAM: fits bigger models, slower steps.
    offload_optimizer: bool = False
    offload_params: bool = False


@dataclass
class CheckpointConfig(Schema):
    # Complete checkpoints kept in <run>/checkpoints (oldest deleted); 0 keeps all. Interval: stage.save_steps.
    keep: int = 2
    # SIGTERM/SIGINT finish the current step, save a checkpoint and exit (Slurm sends SIGTERM before killing).
    save_on_signal: bool = True
    # Resume though this run's config differs from the checkpoint's (each difference listed, and which ones the
    # restored optimizer/scheduler state overrides); false refuses. Also `resume.allow_changes=true` on the CLI.
    allow_changes: bool = False
    # Metric that picks <run>/best/ (needs eval.every_steps > 0), as logged: eval/accuracy, eval/pass@k, eval/maj@k,
    # eval/<reward term>, eval/loss (SFT, DPO), eval/rewards/accuracies (DPO); null = eval/accuracy when the
    # held-out rows have answers, else eval/loss.
    best_metric: str | None = None
    # max | min; null = min for a name holding "loss", else max.
    best_mode: str | None = None


@dataclass
class EvalConfig(Schema):
    # Held-out evaluation inside the run every N optimizer steps (logged as eval/* to TensorBoard and
    # metrics.jsonl; keeps <run>/best/); 0 = only before and after training.
    every_steps: int = 0
    # Held-out problems per evaluation (the first N; null = all), or games of an environment that writes its own
    # prompts (null = 64). Each costs eval_max_new_tokens of greedy decoding: GSM8K's 1,319 x 256 take hours on CPU.
    limit: int | None = None
    # k completions per problem sampled at eval.temperature besides the greedy one: logs eval/pass@k (any correct)
    # and eval/maj@k (the most frequent answer is correct); 0 = greedy only.
    samples: int = 0
    temperature: float = 1.0
    # Tool runs play each held-out problem as rollouts do (multi-turn, same tools and limits; eval/tool_calls,
    # eval/turns); false = one turn, no tools. Sampled completions (eval.samples) stay single-turn.
    tools: bool = True
    # Held-out accuracy before and after training; false skips both (a chain's steps that run without its tools).
    heldout: bool = True


@dataclass
class PathsConfig(Schema):
    # Run dirs land in <output_root>/<stage>/<run_id>/.
    output_root: str = "outputs"
    # Converted model caches (e.g. the GGUF default model as safetensors).
    cache_dir: str = ".cache/pipeline"


@dataclass
class RunConfig(Schema):
    model: ModelConfig = MISSING
    # The schema the stage table names for the stage option (typed there, so stage-specific keys are checked).
    stage: Any = MISSING
    data: DataConfig = MISSING
    reward: RewardConfig = MISSING
    peft: PeftConfig = MISSING
    quant: QuantConfig = MISSING
    hw: HwConfig = MISSING
    zero: ZeroConfig = MISSING
    logging: LoggingConfig = MISSING
    paths: PathsConfig = MISSING
    # Tools and environments of GRPO's rollouts (conf/env/, none by default).
    env: EnvConfig = MISSING
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
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"base_model": ModelConfig},
    "stage": stage_schemas(),
    "data": {"base_data": DataConfig},
    "reward": {"base_reward": RewardConfig},
    "peft": {"base_peft": PeftConfig},
    "quant": {"base_quant": QuantConfig},
    "hw": {"base_hw": HwConfig},
    "zero": {"base_zero": ZeroConfig},
    "logging": {"base_logging": LoggingConfig},
    "paths": {"base_paths": PathsConfig},
    "env": {"base_env": EnvConfig},
}


def register_configs() -> None:
    """Store every schema so option files can start with `defaults: [base_<x>, _self_]`."""
    from pipeline.config.help import register_help
    from pipeline.config.objective import register_direction

    register_help()  # `--help` fills Hydra's help template from conf/ (hydra.help.template in conf/config.yaml)
    register_direction()  # conf/hparams_search/: Optuna's direction follows sweep.mode
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=group, name=name, node=node)
