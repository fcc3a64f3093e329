"""ZeRO-3 sharded loading: each rank holds only its shard of the weights from the moment they load.

transformers loads a model under `deepspeed.zero.Init` (every weight partitioned over the ranks as it is created)
only when a DeepSpeed ZeRO-3 config is registered before `from_pretrained` runs. The Trainer registers one when its
TrainingArguments are built, which in a stage happens after the model has loaded; so `sharded_loading` builds those
arguments first. Without it every rank loads the whole model and DeepSpeed partitions it later: ZeRO-3 could not
train a model larger than one rank's memory.

Three things then need care: random/GGUF sources are materialised before zero.Init is live (here); merging an
`init_from` LoRA adapter needs whole base matrices (`modeling.merge_adapter` gathers one layer at a time, never the
whole model); a partitioned model cannot run a forward pass until the trainer's DeepSpeed engine exists
(`modeling.partitioned`: the stages skip the accuracy before training).
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import PreTrainedModel, TrainerCallback, TrainingArguments

from pipeline.config.derived import fsdp2
from pipeline.config.enums import QuantMethod
from pipeline.config.plan import RunPlan

log = logging.getLogger(__name__)


def sharded_loading(plan: RunPlan, args: dict[str, Any]) -> TrainingArguments | None:
    """Under ZeRO-3, TrainingArguments (`args`: the stage's own) whose DeepSpeed config, with its "auto" values
    filled, is registered for `from_pretrained`; None otherwise. transformers keeps only a weak reference to it: the
    caller must hold the returned object until the model has loaded (the trainer's own arguments replace it)."""
    cfg = plan.cfg
    if fsdp2(cfg):  # FSDP2 shards as it loads (model/fsdp2.py): the process group must exist first
        return TrainingArguments(**args)
    # transformers never loads 4-bit / 8-bit weights under zero.Init: each rank loads the (small) quantized base
    # whole and DeepSpeed partitions it when its engine starts (QuantizedShare logs the share then).
    if plan.ds_config is None or cfg.zero.stage < 3 or cfg.quant.method != QuantMethod.none:
        return None
    # The model is already in the cache (prepare() converts random/GGUF sources before any process group or
    # zero.Init is live): here only the config is registered.
    return TrainingArguments(**args)


def shard_share(model: PreTrainedModel) -> tuple[int, int]:
    """(weight elements this rank holds, elements of the whole model) of a model loaded under zero.Init."""
    params = [p for p in model.parameters() if hasattr(p, "ds_id")]
    return sum(p.ds_tensor.numel() for p in params), sum(p.ds_numel for p in params)


class QuantizedShare(TrainerCallback):
    """Under ZeRO-3 with quant=nf4|int8: logs, once DeepSpeed's engine has partitioned the whole-loaded base, the
    share this rank holds (the quantized counterpart of prepare()'s "ZeRO-3 sharded load" line)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and any(hasattr(p, "ds_id") for p in model.parameters()):
            log.info("ZeRO-3 partitioned the quantized base as its engine started: this rank holds %d of %d weight "
                     "elements", *shard_share(model))
