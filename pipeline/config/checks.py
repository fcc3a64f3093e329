"""Cross-field rules, checked after Hydra composes and before any model or data set loads.

Each rule returns the problems it finds as messages that name the conflicting keys and the override that fixes
them; all problems are reported at once. Imports stay light (no torch): this runs in `run.py` first.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.config.chat_templates import template_problems
from pipeline.config.data_formats import REQUIRED
from pipeline.config.derived import chain_steps, ds_config_path, inside_launcher, split_batch, world_size
from pipeline.config.enums import (
    DataFormat,
    Device,
    GenerationEngine,
    KTOLoss,
    ModelSource,
    PeftMethod,
    QuantMethod,
)
from pipeline.config.env_checks import env_problems
from pipeline.config.fsdp_checks import fsdp2_problems
from pipeline.config.gpu_levers import lever_problems
from pipeline.config.grpo_checks import zero_std_problems
from pipeline.config.hostfile import hostfile_problems
from pipeline.config.peft_checks import peft_problems
from pipeline.config.precision import precision_problems, resolve_auto
from pipeline.config.schema import RunConfig
from pipeline.config.stage_table import STAGES, UnknownStageError, stage_spec
from pipeline.config.teacher import teacher_problems
from pipeline.config.trl_checks import name_problems, trl_problems
from pipeline.config.user_errors import UserError
from pipeline.data.mixing import mix_problems
from pipeline.data.registry import registry_problems
from pipeline.data.sources import peek_columns
from pipeline.rewards import KINDS, UnknownRewardError, get_reward, reward_names, term_function, term_problems


class ConfigError(UserError, ValueError):
    """The composed config is well-typed but inconsistent."""


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Typed, validated and read-only view of a composed config; hw.precision=auto becomes what this machine has."""
    run_cfg = OmegaConf.to_object(cfg)
    resolve_auto(run_cfg)
    validate(run_cfg)
    return run_cfg


def validate(cfg: RunConfig, produced: frozenset[str] = frozenset()) -> None:
    """Raises ConfigError listing every problem. `produced`: the final/ dirs of a chain's steps, which later steps
    may name (`chain:<step>`) before they exist."""
    try:
        spec = stage_spec(cfg.stage.name)
    except UnknownStageError as err:
        raise ConfigError(f"invalid config:\n  - {err}") from None
    if spec.chain:
        # A chain is valid when every sub-stage is: each is checked as the run it will be.
        steps = chain_steps(cfg)
        finals = frozenset(str(Path(step.output_dir) / "final") for step in steps)
        for sub in steps:
            validate(sub, finals)
        return
    problems = [
        *_check_logging(cfg),
        *_check_stage(cfg),
        *name_problems(cfg),
        *trl_problems(cfg),
        *_check_eval(cfg),
        *_check_model(cfg),
        *_check_model_location(cfg),
        *precision_problems(cfg),
        *lever_problems(cfg),
        *_check_generation(cfg),
        *zero_std_problems(cfg),
        *_check_quantization(cfg),
        *peft_problems(cfg),
        *fsdp2_problems(cfg, produced),
        *_check_batch(cfg),
        *_check_data(cfg),
        *template_problems(cfg.model.chat_template, cfg.model.chat_template_kwargs),
        *reward_problems(cfg, produced),
        *teacher_problems(cfg, produced),
        *env_problems(cfg),
        *_check_distributed(cfg),
    ]
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


def _check_logging(cfg: RunConfig) -> list[str]:
    level = cfg.logging.level
    if isinstance(logging.getLevelName(str(level).upper()), int):
        return []
    return [f"logging.level={level} is not a log level: use DEBUG, INFO, WARNING or ERROR."]


def _check_stage(cfg: RunConfig) -> list[str]:
    if cfg.max_steps <= 0 and cfg.stage.num_epochs <= 0:
        return ["max_steps and stage.num_epochs are both <= 0: set max_steps=N or stage.num_epochs=1."]
    return []


def _check_eval(cfg: RunConfig) -> list[str]:
    ev, problems = cfg.eval, []
    if ev.every_steps < 0 or ev.samples < 0:
        problems.append(f"eval.every_steps={ev.every_steps} / eval.samples={ev.samples}: use 0 (off) or a positive "
                        "number.")
    if ev.limit is not None and ev.limit < 1:
        problems.append(f"eval.limit={ev.limit} keeps no problems: use a positive number, or null for all.")
    if ev.every_steps and not stage_spec(cfg.stage.name).policy:
        problems.append(f"eval.every_steps={ev.every_steps} with stage={cfg.stage.name}: a reward model generates no "
                        "answers to score; set eval.every_steps=0 (its held-out pair accuracy is in summary.json).")
    if cfg.checkpoint.best_mode not in (None, "max", "min"):
        problems.append(f"checkpoint.best_mode={cfg.checkpoint.best_mode}: use max, min or null (inferred).")
    return problems


def _check_model(cfg: RunConfig) -> list[str]:
    m = cfg.model
    if m.source == ModelSource.random and "model_type" not in m.arch:
        return [f"model={m.name} has source=random but no model.arch.model_type: add e.g. model_type: qwen3."]
    if m.source == ModelSource.gguf and not m.gguf_file:
        return [f"model={m.name} has source=gguf but no model.gguf_file: name the .gguf file in model.path."]
    if m.source != ModelSource.random and not m.path:
        return [f"model={m.name} has no model.path: set a hub id or a local checkpoint directory."]
    return []


def _check_model_location(cfg: RunConfig) -> list[str]:
    """A local model path that does not exist fails here, before the data loads, instead of in transformers' long
    message about hub ids."""
    m = cfg.model
    if m.source == ModelSource.random or not m.path or m.path.startswith("pkg:"):
        return []
    path = Path(m.path).expanduser()
    if path.is_dir():
        needed = m.gguf_file if m.source == ModelSource.gguf else "config.json"
        if needed and not (path / needed).is_file():
            return [f"model.path={m.path} has no {needed} (model={m.name}): point model.path at the folder that "
                    f"holds the checkpoint (config.json + weights), e.g. a run's final/ or export/ folder."]
        return []
    if m.path.startswith(("/", ".", "~")) or m.path.count("/") > 1 or path.exists():
        return [f"model.path={m.path}: no such directory (model={m.name}). Fix: give an existing local checkpoint "
                f"folder, or a hub id like Qwen/Qwen2.5-0.5B-Instruct."]
    # Anything else is a hub id: whether it can be fetched is only known when loading (validation stays offline).
    return []


def _check_generation(cfg: RunConfig) -> list[str]:
    if getattr(cfg.stage, "generation", None) != GenerationEngine.vllm_colocate:
        return []
    problems = []
    if cfg.hw.device != Device.cuda:
        problems.append(f"stage.generation=vllm_colocate needs a GPU, but hw={cfg.hw.name} is device "
                        f"{cfg.hw.device.value}: pick a GPU hw profile, or stage.generation=transformers.")
    if importlib.util.find_spec("vllm") is None:
        problems.append("stage.generation=vllm_colocate needs vLLM, which is not installed: "
                        "pip install -e '.[gpu]', or stage.generation=transformers.")
    return problems


def _check_quantization(cfg: RunConfig) -> list[str]:
    if cfg.quant.method != QuantMethod.none and cfg.peft.method == PeftMethod.full:
        return [
            f"quant={cfg.quant.method.value} with peft=full: quantized weights cannot be trained directly. "
            "Set peft=lora (QLoRA), or quant=none for full fine-tuning."
        ]
    return []


def _check_batch(cfg: RunConfig) -> list[str]:
    batch, world = cfg.stage.batch_size, world_size(cfg)
    if batch <= 0 or batch % world:
        return [
            f"stage.batch_size={batch} does not split over {world} processes (hw={cfg.hw.name}): "
            f"set stage.batch_size to a multiple of {world}."
        ]
    per_device, accum = split_batch(cfg)
    problems = []
    if per_device * accum * world != batch:
        problems.append(
            f"stage.batch_size={batch} is not a multiple of hw.micro_batch={per_device} x {world} processes: "
            f"set stage.batch_size={per_device * accum * world} or hw.micro_batch to a divisor of {batch // world}."
        )
    if getattr(cfg.stage, "loss_type", None) == KTOLoss.kto and per_device < 2:
        problems.append(f"stage=kto with a micro-batch of {per_device} row: KTO estimates its KL term from the other "
                        "rows of a micro-batch. Set hw.micro_batch=2 or more (and stage.batch_size to match), or "
                        "stage.loss_type=apo_zero_unpaired.")
    if hasattr(cfg.stage, "num_generations"):
        gens = cfg.stage.num_generations
        if gens < 2:
            problems.append(f"stage.num_generations={gens}: GRPO compares completions within a group; set >= 2.")
        elif batch % gens:
            problems.append(
                f"stage.batch_size={batch} (completions per step) is not divisible by stage.num_generations={gens}:"
                f" set stage.batch_size to a multiple of {gens}, e.g. {gens * max(1, batch // gens)}."
            )
    return problems


def _check_data(cfg: RunConfig) -> list[str]:
    stage, fmt = cfg.stage.name, cfg.data.format
    if cfg.data.mix:
        return mix_problems(cfg.data, stage, STAGES[stage].rows)
    if cfg.data.dataset:  # a LLaMA-Factory registry: its entries say their formats
        return registry_problems(cfg.data, stage, STAGES[stage].rows)
    allowed = STAGES[stage].formats
    if fmt != DataFormat.auto and fmt not in allowed:
        names = ", ".join(f.value for f in allowed)
        return [f"data.format={fmt.value} cannot feed stage={stage}: it needs {names} (data={cfg.data.name})."]
    needed = STAGES[stage].columns
    if not needed or fmt != DataFormat.auto:
        return []
    columns = peek_columns(cfg.data)
    if columns is None or needed <= columns or _some_format_fits(allowed, columns):
        return []
    missing = ", ".join(sorted(needed - columns))
    return [
        f"stage={stage} needs columns {', '.join(sorted(needed))} but {cfg.data.path} has "
        f"{', '.join(sorted(columns))} (missing {missing}): add them, or map yours with "
        f"data.columns='{{your_column: {sorted(needed - columns)[0]}}}'."
    ]


def _some_format_fits(formats: tuple[DataFormat, ...], columns: set[str]) -> bool:
    return any(set(REQUIRED[f]) <= columns for f in formats)


def reward_problems(cfg: RunConfig, produced: frozenset[str] = frozenset()) -> list[str]:
    """The reward terms' problems (unknown names, kind fields missing or misplaced); also run by the score tool."""
    if not stage_spec(cfg.stage.name).rewards:
        return []
    if not cfg.reward.terms:
        return [f"reward={cfg.reward.name} has no terms: GRPO needs at least one (e.g. reward=correctness)."]
    known, problems = reward_names(), []
    for term, t in cfg.reward.terms.items():
        name = term_function(term, t)
        try:
            if name not in KINDS:
                get_reward(name)  # a dotted path (custom reward) is imported here, so a typo fails before training
        except UnknownRewardError as e:
            detail = str(e) if "." in name else f"Known rewards: {', '.join(known)}."
            problems.append(f"reward.terms.{term}: unknown reward '{name}'. {detail} "
                            f"Set reward.terms.{term}.function to one of them.")
            continue
        problems += term_problems(term, t, produced)  # a judge without url, a reward model path that is not there...
    return problems


# ---- distributed: ZeRO profiles, hostfiles, the launcher's world size (issue 3) -------------------------------


def _check_distributed(cfg: RunConfig) -> list[str]:
    zero, quant = cfg.zero, cfg.quant.method
    problems = [*hostfile_problems(cfg), *launched_world_problems(cfg)]
    if zero.offload_params and quant != QuantMethod.none:
        # QLoRA under plain ZeRO-3 is measured (tests/e2e/test_qlora_zero3.py); offloading the packed 4-bit weights
        # is not: on CPU ranks offload moves nothing, and PEFT's documented ZeRO-3 QLoRA recipe does not offload
        problems.append(
            f"quant={quant.value} with zero={zero.name}: offloading bitsandbytes' 4-bit/8-bit weights is unproven "
            "(PEFT's ZeRO-3 QLoRA recipe keeps them on the device). Use zero=zero3 with QLoRA."
        )
    if zero.stage == 0 and (zero.offload_optimizer or zero.offload_params):
        problems.append(
            f"zero={zero.name} offloads to CPU but has no ZeRO stage: offload is a DeepSpeed feature. "
            "Pick zero=zero2_offload or zero=zero3_offload."
        )
    elif zero.offload_params and zero.stage < 3:
        problems.append(f"zero.offload_params=true needs ZeRO-3 (zero={zero.name}): pick zero=zero3_offload.")
    if zero.stage and not zero.config_file:
        problems.append(f"zero={zero.name} has stage {zero.stage} but no zero.config_file: name a JSON in ds_configs/.")
    if zero.stage:
        if importlib.util.find_spec("deepspeed") is None:
            problems.append(
                f"zero={zero.name} needs the deepspeed package: pip install -c constraints.txt deepspeed, or zero=none."
            )
        if zero.config_file and not ds_config_path(cfg).is_file():
            problems.append(f"zero.config_file={zero.config_file}: not found in ds_configs/ nor as a path.")
    return problems


def launched_world_problems(cfg: RunConfig) -> list[str]:
    """A typed launch (`deepspeed --num_gpus 4 ...`) must agree with the hw profile the batch split assumes."""
    if not inside_launcher() or int(os.environ["WORLD_SIZE"]) == world_size(cfg):
        return []
    actual = int(os.environ["WORLD_SIZE"])
    return [
        f"the launcher started {actual} processes but hw={cfg.hw.name} says {cfg.hw.num_nodes} node(s) x "
        f"{cfg.hw.num_processes} = {world_size(cfg)}; the batch split needs them equal. Fix: pass "
        f"hw.num_processes={actual // cfg.hw.num_nodes} (per node) or pick a matching hw profile."
    ]
