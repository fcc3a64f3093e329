"""stage.teacher (stage=distill) resolved without loading anything: which weights it names, and the vocabulary check
that files alone allow. The tokenizer check proper runs before any weights load (pipeline/train/model/teacher.py).

    stage.teacher=qwen2.5_1.5b_instruct       a model option (conf/model/<name>.yaml)
    stage.teacher=outputs/grpo/<run_id>        a run dir: its final/ (LoRA adapter on the run's base, or full model)
    stage.teacher=path/to/run/best             a run's final/ or best/; or any model dir with config.json (an export)
    stage.teacher=Qwen/Qwen2.5-1.5B-Instruct   a hub id (cached, or with network)
    stage.teacher=chain:grpo                   in stage=chain, an earlier step's final/
Light: no torch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.config.derived import CHAIN_REF
from pipeline.config.enums import ModelSource
from pipeline.config.run_dir import RunDir
from pipeline.config.saved_run import RunDirError, run_config
from pipeline.config.schema import ModelConfig, RunConfig
from pipeline.config.user_errors import UserError

CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"
FORMS = ("a model option (conf/model/<name>.yaml), a run dir (outputs/<stage>/<run_id>), a model dir with "
         "config.json, a hub id (org/name), or chain:<step> inside stage=chain")


class TeacherError(UserError, ValueError):
    """stage.teacher names nothing loadable, or a teacher whose vocabulary differs from the student's."""


@dataclasses.dataclass(frozen=True)
class Teacher:
    """Where the teacher's weights come from. `model`: the weights to load (a run's base when `final` is an adapter);
    `final`: a run's final/ or best/ (adapter or full model), None for a plain model; `run`: that run's config."""

    model: ModelConfig
    final: str | None = None
    run: RunConfig | None = None

    @property
    def adapter(self) -> bool:
        return self.final is not None and (Path(self.final) / "adapter_config.json").is_file()


def resolve_teacher(cfg: RunConfig, produced: frozenset[str] = frozenset()) -> Teacher:
    """The teacher stage.teacher names; TeacherError says which forms exist. `produced`: a chain's final/ dirs that
    do not exist yet (an earlier step writes them), taken on the chain's own model."""
    name = str(cfg.stage.teacher or "")
    if not name:
        raise TeacherError(f"stage.teacher is empty: name the model to distill from: {FORMS}.")
    if name.startswith(CHAIN_REF):
        raise TeacherError(f"stage.teacher={name}: chain:<step> names an earlier step of stage=chain (e.g. stage=chain "
                           "stage.stages=[sft,distill] stage.distill.teacher=chain:sft); here there is none.")
    option = CONF_MODELS / f"{name}.yaml"
    if "/" not in name and option.is_file():
        return Teacher(_model_option(option, name))
    path = Path(name)
    if name in produced:  # an earlier chain step's final/, written on the chain's model before this step runs
        return Teacher(cfg.model, final=name)
    if path.is_dir():
        return _from_dir(path, name)
    if _hub_id(name):
        return Teacher(ModelConfig(name=name.rpartition("/")[2], path=name, source=ModelSource.pretrained))
    known = ", ".join(sorted(p.stem for p in CONF_MODELS.glob("*.yaml")))
    raise TeacherError(f"stage.teacher={name}: no such model option ({known}) nor directory. Use {FORMS}.")


def _model_option(path: Path, name: str) -> ModelConfig:
    raw = OmegaConf.load(path)
    raw.pop("defaults", None)
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": name}, raw)
    return OmegaConf.to_object(merged)


def _from_dir(path: Path, name: str) -> Teacher:
    """A run dir (config.yaml: its final/), a run's final/ or best/ (its run's config.yaml one up), or a model dir."""
    if RunDir(path).config.is_file():
        final = RunDir(path).final
        if not final.is_dir():
            raise TeacherError(f"stage.teacher={name}: the run has no final/ (not finished). Resume it, or name its "
                               "best/ (stage.teacher=<run>/best) or another run.")
        return _from_run(path, final, name)
    if RunDir(path.parent).config.is_file() and _model_files(path):
        return _from_run(path.parent, path, name)
    if (path / "config.json").is_file():
        return Teacher(ModelConfig(name=path.name, path=str(path), source=ModelSource.pretrained))
    hint = (" It holds a LoRA adapter without its run: name the run dir, whose config says the base."
            if (path / "adapter_config.json").is_file() else "")
    raise TeacherError(f"stage.teacher={name}: a directory with neither config.json nor a run's config.yaml.{hint} "
                       f"Use {FORMS}.")


def _from_run(run_dir: Path, final: Path, name: str) -> Teacher:
    try:
        run = run_config(run_dir)
    except RunDirError as err:
        raise TeacherError(f"stage.teacher={name}: {err}") from None
    if (final / "adapter_config.json").is_file():
        return Teacher(run.model, final=str(final), run=run)
    return Teacher(ModelConfig(name=f"{run.model.name}-{run_dir.name}", path=str(final),
                               source=ModelSource.pretrained), final=str(final), run=run)


def _model_files(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _hub_id(name: str) -> bool:
    org, slash, repo = name.partition("/")
    return bool(slash and org and repo) and "/" not in repo and not name.startswith((".", "~"))


def file_vocab_size(model: ModelConfig) -> int | None:
    """The embedding rows (config vocab_size) a model has, when a file says so without loading it: a random model's
    arch, a local model dir's config.json. None otherwise (a GGUF file, a hub id): checked when it loads."""
    if model.source == ModelSource.random:
        return model.arch.get("vocab_size")
    config = Path(model.path) / "config.json"
    if model.source != ModelSource.pretrained or not config.is_file():
        return None
    raw = json.loads(config.read_text())
    return raw.get("vocab_size") or raw.get("text_config", {}).get("vocab_size")


def vocab_refusal(teacher: str, teacher_size: int, student: str, student_size: int, what: str) -> str:
    return (f"stage.teacher={teacher} has a {what} of {teacher_size} tokens, the student model={student} "
            f"{student_size}: distillation compares the two next-token distributions token by token, so both need "
            "one tokenizer. Fix: a teacher of the student's family (same tokenizer, e.g. a larger SmolLM2 or Qwen2.5 "
            "for a student of that family), or a student of the teacher's (model=<option>).")


def teacher_problems(cfg: RunConfig, produced: frozenset[str] = frozenset()) -> list[str]:
    """stage=distill's teacher: resolvable, and of the student's vocabulary size where files tell both."""
    if not hasattr(cfg.stage, "teacher"):
        return []
    try:
        teacher = resolve_teacher(cfg, produced)
    except TeacherError as err:
        return [str(err)]
    ours, theirs = file_vocab_size(cfg.model), file_vocab_size(teacher.model)
    if ours is not None and theirs is not None and ours != theirs:
        return [vocab_refusal(cfg.stage.teacher, theirs, cfg.model.name, ours, "vocab_size (embedding rows)")]
    return []
