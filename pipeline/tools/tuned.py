"""A finished run, loaded back: its typed config, its tuned model (base + LoRA adapter, or the full model) and
its tokenizer -- the final model, or with which=best the best evaluated step's (<run>/best/). Shared by
`pipeline.tools.evaluate`, `pipeline.tools.export`, `pipeline.tools.chat` and `pipeline.tools.serve`; the base is
built by the same `build_model` as in training (weights, then the init_from merge)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.config.run_dir import RunDir, partial_of
from pipeline.config.saved_run import RunDirError, run_config
from pipeline.config.schema import QuantConfig, RunConfig
from pipeline.train.model.build import build_model, load_tokenizer

WHICH = ("final", "best")


def final_dir(run_dir: Path, which: str = "final") -> Path:
    """<run>/final (which=final) or <run>/best (which=best); RunDirError says how to get the missing one."""
    if which not in WHICH:
        raise RunDirError(f"which={which}: use which=final (the last step) or which=best.")
    if which == "best":
        best = RunDir(run_dir).best
        if not best.is_dir():
            raise RunDirError(f"{best} not found: the run kept no best model. Fix: train with eval.every_steps=N "
                              "(held-out data with answers is needed), or use which=final.")
        return best
    final = RunDir(run_dir).final
    if not final.is_dir():
        hint = " (final.partial exists: the run stopped while saving)" if partial_of(final).exists() else ""
        raise RunDirError(
            f"{final} not found{hint}: the run did not finish. Fix: resume it (python pipeline/run.py resume=auto "
            f"output_dir={run_dir} ...) or pick a finished run."
        )
    return final


def is_adapter(final: Path) -> bool:
    return (final / "adapter_config.json").is_file()


def load_base(cfg: RunConfig, quant: QuantConfig | None = None) -> Any:
    """The weights the run started from (its base, with any init_from merged), optionally with another quant."""
    model, _ = build_model(dataclasses.replace(cfg, quant=quant or cfg.quant), for_training=False)
    return model


def load_tuned(run_dir: Path, cfg: RunConfig | None = None, which: str = "final") -> tuple[Any, Any]:
    """(model, tokenizer) as trained: the adapter on the run's (possibly quantized) base, or the full model."""
    cfg = cfg or run_config(run_dir)
    final = final_dir(run_dir, which)
    tokenizer = AutoTokenizer.from_pretrained(str(final))
    if is_adapter(final):
        from peft import PeftModel  # why: peft imports bitsandbytes; a tool's main keeps that out when unused

        model = PeftModel.from_pretrained(load_base(cfg), str(final))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(final), dtype="float32")
    model.eval()
    return model, tokenizer


def load_plain(location: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of an export, any transformers model directory, or a hub id; fp32, eval mode."""
    try:
        model = AutoModelForCausalLM.from_pretrained(str(location), dtype="float32").eval()
    except OSError as err:  # neither a folder with a model nor a hub id this machine can load
        raise RunDirError(f"{location}: not a run directory, a model directory or a loadable hub id ({err}). Fix: "
                          "give outputs/<stage>/<run_id>, an export directory, or a hub id that is cached (offline) "
                          "or reachable.") from err
    return model, AutoTokenizer.from_pretrained(str(location))


def load_model_or_run(path: Path, which: str = "final") -> tuple[Any, Any]:
    """(model, tokenizer) of an export / plain model directory, or of a finished run (its final/ or best/)."""
    if (path / "config.json").is_file():
        # An export (python -m pipeline.tools.export) or any transformers model directory.
        return load_plain(path)
    return load_tuned(path, which=which)


def load_untuned(run_dir: Path, cfg: RunConfig | None = None) -> tuple[Any, Any]:
    """(base model, tokenizer) the run started from, loaded as the run loaded it."""
    cfg = cfg or run_config(run_dir)
    model = load_base(cfg)
    model.eval()
    return model, load_tokenizer(cfg.model, cfg.paths.cache_dir)
