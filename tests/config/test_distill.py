"""stage=distill's config: its knobs are DistillationConfig fields, every form of stage.teacher resolves (a model
option, a model dir, a run dir, a hub id, chain:<step>) and every mistake is refused before anything loads -- a
teacher whose vocabulary differs from the student's among them, naming both sizes and the fix. That the values reach
TRL's trainer is read back from a real run (tests/e2e/test_distill.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.derived import chain_steps
from pipeline.config.frozen import thawed
from pipeline.config.stage_schemas import DistillStageConfig, StageConfig
from pipeline.config.stage_table import stage_spec
from pipeline.config.teacher import resolve_teacher
from pipeline.config.trl_fields import config_fields
from tests.helpers.runs import REPO, compose_config, offline_env

OURS_ONLY = {"teacher"}  # becomes the trainer's teacher_model argument (pipeline/train/model/teacher.py)


def _run_config(*overrides: str):
    return to_run_config(compose_config(["model=tiny", "stage=distill", *overrides]))


def _model_dir(path: Path, vocab: int = 49152) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen3", "vocab_size": vocab}))
    return path


def _run_dir(path: Path, adapter: bool = True, finished: bool = True) -> Path:
    """A run dir as a finished tiny SFT run leaves it (config.yaml; final/ with an adapter or a full model)."""
    run_cfg = to_run_config(compose_config(["model=tiny", "stage=sft", f"output_dir={path}"]))
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(thawed(run_cfg))))
    if finished:
        (path / "final").mkdir()
        (path / "final" / ("adapter_config.json" if adapter else "config.json")).write_text("{}")
    return path


def test_every_distill_knob_is_a_distillation_config_field_of_the_same_name() -> None:
    own = {f.name for f in fields(DistillStageConfig)} - {f.name for f in fields(StageConfig)} - OURS_ONLY
    assert own and own <= config_fields(stage_spec("distill").trl_config)


def test_distill_composes_with_the_arithmetic_settings() -> None:
    s = _run_config("stage.teacher=tiny").stage
    assert (s.name, s.teacher, s.batch_size, s.max_completion_length, s.beta) == ("distill", "tiny", 32, 16, 1.0)
    assert (s.learning_rate, s.lr_scheduler) == (3e-4, "constant")


def test_every_teacher_form_resolves(tmp_path: Path) -> None:
    option = resolve_teacher(_run_config("stage.teacher=tiny"))
    assert (option.model.name, option.model.source.value, option.final) == ("tiny", "random", None)
    plain = _model_dir(tmp_path / "export")
    model_dir = resolve_teacher(_run_config(f"stage.teacher={plain}"))
    assert (model_dir.model.path, model_dir.model.source.value, model_dir.final) == (str(plain), "pretrained", None)
    run = _run_dir(tmp_path / "run")
    for named in (run, run / "final"):  # the run dir, or its final/ (best/ alike)
        teacher = resolve_teacher(_run_config(f"stage.teacher={named}"))
        assert teacher.adapter and teacher.final == str(run / "final") and teacher.model.name == "tiny"
        assert teacher.run.stage.name == "sft"
    full = resolve_teacher(_run_config(f"stage.teacher={_run_dir(tmp_path / 'full', adapter=False)}"))
    assert not full.adapter and full.model.path == str(tmp_path / "full" / "final")
    hub = resolve_teacher(_run_config("stage.teacher=HuggingFaceTB/SmolLM2-360M-Instruct"))
    assert (hub.model.path, hub.model.name) == ("HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M-Instruct")


@pytest.mark.parametrize(("teacher", "message"), [
    ("", "stage.teacher is empty: name the model to distill from"),
    ("tiny_typo", "stage.teacher=tiny_typo: no such model option (qwen1.5_0.5b_chat"),
    ("chain:grpo", "chain:<step> names an earlier step of stage=chain"),
    ("{unfinished}", "the run has no final/ (not finished)"),
    ("{adapter_alone}", "It holds a LoRA adapter without its run: name the run dir"),
    ("{small_vocab}", "stage.teacher={small_vocab} has a vocab_size (embedding rows) of 128 tokens, the student "
                      "model=tiny 49152"),
])
def test_teacher_mistakes_are_refused_before_anything_loads(teacher: str, message: str, tmp_path: Path) -> None:
    paths = {"unfinished": _run_dir(tmp_path / "unfinished", finished=False),
             "adapter_alone": tmp_path / "adapter", "small_vocab": _model_dir(tmp_path / "small", vocab=128)}
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    teacher, message = teacher.format(**paths), message.format(**paths)
    with pytest.raises(ConfigError) as err:
        _run_config(f"stage.teacher='{teacher}'")
    assert message in str(err.value)
    if "vocab_size" in message:
        assert "Fix: a teacher of the student's family (same tokenizer" in str(err.value)


def test_the_teacher_is_ours_not_a_trl_pass_through() -> None:
    with pytest.raises(ConfigError) as err:
        _run_config("stage.teacher=tiny", "++stage.trl.teacher_model_name_or_path=x")
    assert "stage.trl.teacher_model_name_or_path: set by our key stage.teacher" in str(err.value)


def test_distill_chains_with_an_earlier_step_as_teacher() -> None:
    sft, distill, grpo = chain_steps(_run_config("stage=chain", "stage.stages=[sft,distill,grpo]",
                                                 "stage.distill.teacher=chain:sft"))
    assert distill.stage.name == "distill" and distill.stage.teacher == sft.output_dir + "/final"
    assert distill.init_from == sft.output_dir + "/final" and grpo.init_from == distill.output_dir + "/final"
    # the whole chain validates although no step has run yet (the sft step's final/ is produced by the chain)
    to_run_config(compose_config(["model=tiny", "stage=chain", "stage.stages=[sft,distill]",
                                  "stage.distill.teacher=chain:sft"]))
    with pytest.raises(ConfigError) as err:  # a step that runs later cannot teach
        to_run_config(compose_config(["model=tiny", "stage=chain", "stage.stages=[distill,sft]",
                                      "stage.distill.teacher=chain:sft"]))
    assert "chain:<step> names an earlier step of stage=chain" in str(err.value)


def test_the_vocabulary_refusal_comes_before_torch_is_imported(tmp_path: Path) -> None:
    small = _model_dir(tmp_path / "small", vocab=128)
    code = ("import sys\nfrom pipeline.config.checks import ConfigError, to_run_config\n"
            "from tests.helpers.runs import compose_config\n"
            f"try:\n    to_run_config(compose_config(['model=tiny', 'stage=distill', 'stage.teacher={small}']))\n"
            "except ConfigError as err:\n    print('refused' if 'vocab_size' in str(err) else err)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=offline_env(), capture_output=True, text=True)
    assert out.stdout.split() == ["refused", "False"], out.stdout + out.stderr[-2000:]
