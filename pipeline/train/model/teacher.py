"""The teacher of stage=distill (stage.teacher, resolved by pipeline/config/teacher.py): its tokenizer and config
checked against the student's before any weights load, then its weights loaded frozen -- a model option as a base is
loaded, a run's final/ as that run built it (its base with the run's own init_from merged, its adapter merged on
top) or the full model it saved. Never quantized, never trained: eval mode, no gradients.

Under ZeRO-3 the caller loads it with the DeepSpeed config live (each rank holds its shard, as the student), and
TRL's DistillationTrainer wraps it in a DeepSpeed inference engine (trl.models.prepare_deepspeed), as DPO's
reference model.
"""

from __future__ import annotations

import dataclasses
import logging

from peft import PeftModel
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pipeline.config.schema import QuantConfig, RunConfig
from pipeline.config.teacher import Teacher, TeacherError, vocab_refusal
from pipeline.train.model.build import build_model, load_model, load_tokenizer, merge_adapter, model_dir

log = logging.getLogger(__name__)

NO_QUANT = QuantConfig()


def materialise_teacher(cfg: RunConfig, teacher: Teacher) -> None:
    """A random or GGUF teacher base converted into the cache now, before the process group starts (as the student's:
    pipeline/train/stages/prepare.py says why)."""
    model_dir(teacher.model, cfg.paths.cache_dir)


def teacher_tokenizer(cfg: RunConfig, teacher: Teacher) -> PreTrainedTokenizerBase:
    # a run saved its tokenizer into final/ (with any chat template it trained under)
    if teacher.final is not None:
        return AutoTokenizer.from_pretrained(teacher.final)
    return load_tokenizer(teacher.model, cfg.paths.cache_dir)


def check_same_vocabulary(cfg: RunConfig, teacher: Teacher, student: PreTrainedTokenizerBase) -> None:
    """TeacherError (naming both sizes and the fix) unless teacher and student map the same tokens to the same ids
    and have as many embedding rows: reads tokenizers and config.json only, no weights."""
    name, theirs = cfg.stage.teacher, teacher_tokenizer(cfg, teacher)
    if theirs.get_vocab() != student.get_vocab():
        raise TeacherError(vocab_refusal(name, len(theirs), cfg.model.name, len(student), "tokenizer vocabulary"))
    rows = {
        "student": _config_vocab(model_dir(cfg.model, cfg.paths.cache_dir), cfg),
        "teacher": _config_vocab(_weights_location(cfg, teacher), cfg),
    }
    if rows["student"] != rows["teacher"]:
        raise TeacherError(vocab_refusal(name, rows["teacher"], cfg.model.name, rows["student"],
                                         "vocab_size (embedding rows)"))
    log.info("teacher %s: same tokenizer as the student (%d tokens, %d embedding rows)", name, len(student),
             rows["student"])


def load_teacher(cfg: RunConfig, teacher: Teacher) -> PreTrainedModel:
    """The teacher's weights, frozen, in eval mode (on the run's hardware, unquantized)."""
    if teacher.adapter:
        # the teacher run's base as it built it (its own init_from merged), on this run's hardware and cache
        base_cfg = dataclasses.replace(teacher.run or cfg, hw=cfg.hw, quant=NO_QUANT, paths=cfg.paths)
        if teacher.run is None:  # a chain step's final/: the chain's model, without this step's init_from
            base_cfg = dataclasses.replace(base_cfg, init_from=None)
        base, _ = build_model(base_cfg, for_training=False)
        model = merge_adapter(PeftModel.from_pretrained(base, teacher.final))
        log.info("teacher: %s's adapter %s merged into its base", teacher.model.name, teacher.final)
    else:
        model = load_model(teacher.model, NO_QUANT, cfg.hw, cfg.paths.cache_dir)
    model.eval()
    model.requires_grad_(False)
    return model


def _weights_location(cfg: RunConfig, teacher: Teacher) -> str:
    return model_dir(teacher.model, cfg.paths.cache_dir)


def _config_vocab(location: str, cfg: RunConfig) -> int:
    config = AutoConfig.from_pretrained(location, trust_remote_code=cfg.model.trust_remote_code)
    return config.get_text_config().vocab_size
