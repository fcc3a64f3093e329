"""Start a stage from a previous run's result (`init_from`): how chained stages hand over.

A LoRA adapter dir (adapter_config.json) is merged into the freshly loaded base, so the next stage trains a new
adapter on top of the previous result, and DPO's reference (the adapter-disabled model) is that result rather
than the raw base, as when LLaMA-Factory is given `--adapter_name_or_path`. A full model dir (config.json) is
loaded in place of model.path.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from transformers import PreTrainedModel

from pipeline.config.schema import ModelSource, RunConfig
from pipeline.train.modeling import load_model

log = logging.getLogger(__name__)


def load_start_model(cfg: RunConfig) -> PreTrainedModel:
    """The model a stage starts from: the configured base, or what `init_from` points at."""
    if not cfg.init_from:
        return load_model(cfg.model, cfg.quant, cfg.hw, cfg.paths.cache_dir)
    start = Path(cfg.init_from)
    if (start / "adapter_config.json").exists():
        from peft import PeftModel

        base = load_model(cfg.model, cfg.quant, cfg.hw, cfg.paths.cache_dir)
        log.info("starting from %s: LoRA adapter merged into %s", start, cfg.model.name)
        # Merging must come before k-bit preparation and before the new adapter wraps the model.
        return PeftModel.from_pretrained(base, str(start)).merge_and_unload()
    if (start / "config.json").exists():
        log.info("starting from the full model in %s", start)
        model_cfg = dataclasses.replace(cfg.model, path=str(start), source=ModelSource.pretrained)
        return load_model(model_cfg, cfg.quant, cfg.hw, cfg.paths.cache_dir)
    raise FileNotFoundError(
        f"init_from={cfg.init_from}: no adapter_config.json or config.json there. "
        "Point it at a finished run's final/ dir (or drop init_from to start from model.path)."
    )
