"""A finished run, loaded back: its typed config, its tuned model (base + LoRA adapter, or the full model) and
its tokenizer. Shared by `pipeline.tools.evaluate`, `pipeline.tools.export` and `pipeline.tools.chat`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.config.schema import SCHEMAS, QuantConfig, RunConfig


class RunDirError(ValueError):
    """The directory is not a finished run; the message says what is missing and what to do."""


def run_config(run_dir: Path) -> RunConfig:
    """The typed config a run used (<run>/config.yaml, written before training)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{path} not found: {run_dir} is not a run directory. Fix: give outputs/<stage>/<run_id>.")
    raw = OmegaConf.load(path)
    # `stage` is typed per option: rebuild it from the schema its name selects, so its fields are checked too.
    stage_schema = SCHEMAS["stage"].get(f"base_{raw.stage.name}")
    if stage_schema is None:
        raise RunDirError(f"{path}: unknown stage.name={raw.stage.name}.")
    stage = OmegaConf.merge(OmegaConf.structured(stage_schema), raw.stage)
    del raw["stage"]
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), raw)
    cfg.stage = stage
    return OmegaConf.to_object(cfg)


def final_dir(run_dir: Path) -> Path:
    final = run_dir / "final"
    if not final.is_dir():
        hint = " (final.partial exists: the run stopped while saving)" if (run_dir / "final.partial").exists() else ""
        raise RunDirError(
            f"{final} not found{hint}: the run did not finish. Fix: resume it (python pipeline/run.py resume=auto "
            f"output_dir={run_dir} ...) or pick a finished run."
        )
    return final


def is_adapter(final: Path) -> bool:
    return (final / "adapter_config.json").is_file()


def load_base(cfg: RunConfig, quant: QuantConfig | None = None) -> Any:
    from pipeline.train.modeling import load_model

    return load_model(cfg.model, quant or cfg.quant, cfg.hw, cfg.paths.cache_dir)


def load_tuned(run_dir: Path, cfg: RunConfig | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) as trained: the adapter on the run's (possibly quantized) base, or the full model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = cfg or run_config(run_dir)
    final = final_dir(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(final))
    if is_adapter(final):
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_base(cfg), str(final))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(final), dtype="float32")
    model.eval()
    return model, tokenizer


def load_untuned(run_dir: Path, cfg: RunConfig | None = None) -> tuple[Any, Any]:
    """(base model, tokenizer) the run started from, loaded as the run loaded it."""
    from pipeline.train.modeling import load_tokenizer

    cfg = cfg or run_config(run_dir)
    model = load_base(cfg)
    model.eval()
    return model, load_tokenizer(cfg.model, cfg.paths.cache_dir)
