"""Reward model: a sequence-classification model (one output, as TRL's RewardTrainer / stage=rm trains it) scores
prompt + completion, frozen, in batches, on the training device.

    reward=model reward.terms.rm.model=outputs/rm/RUN        # a stage=rm run (its final/), a model dir, a hub id

Texts are built as RewardTrainer built them in training: conversational rows through the reward model's own
chat template, plain text as prompt + completion + EOS. A LoRA adapter directory (adapter_config.json, the score
head in modules_to_save) is loaded on its base with peft and merged. The model loads on the first call (so the
GRPO stage can place it on its device first) and once per path and device in a process.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from pipeline.config.derived import CHAIN_REF
from pipeline.rewards.calls import RewardSetupError
from pipeline.rewards.registry import TermKind, completion_text, register_kind, term_field

DEFAULTS = {"batch_size": 16, "max_length": 2048}
FIELDS = ("model", "batch_size", "max_length")


class RewardModel:
    """A callable reward: the model's single logit for each (prompt, completion)."""

    def __init__(self, term_name: str, term: Any) -> None:
        self.term_name = term_name
        self.path = model_path(term_field(term, "model", ""))
        self.batch_size = int(term_field(term, "batch_size", DEFAULTS["batch_size"]))
        self.max_length = int(term_field(term, "max_length", DEFAULTS["max_length"]))
        self.device: Any = None

    def to(self, device: Any) -> RewardModel:
        """Score on ``device`` (the GRPO stage passes its accelerator's); default: CUDA when present, else CPU."""
        self.device = device
        return self

    def __call__(self, completions: list[Any], prompts: list[Any] | None = None, **_: Any) -> list[float]:
        import torch

        device = str(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            model, tokenizer = load_reward_model(self.path, device)
        except (OSError, ValueError, RuntimeError) as e:  # a missing file, a wrong head, no memory left
            raise RewardSetupError(f"reward term {self.term_name!r}: the reward model {self.path} does not load: "
                                   f"{type(e).__name__}: {e}") from e
        prompts = [""] * len(completions) if prompts is None else prompts
        texts = [scored_text(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=self.max_length, add_special_tokens=False)
            with torch.inference_mode():
                logits = model(**batch.to(model.device)).logits
            scores += logits[:, 0].float().tolist()
        return scores


def scored_text(tokenizer: Any, prompt: Any, completion: Any) -> str:
    """The text the reward model reads, as TRL's RewardTrainer tokenised its training rows."""
    if isinstance(prompt, list) or isinstance(completion, list):
        turns = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        messages = (prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]) + turns
        if tokenizer.chat_template:
            # why here: rewards load before training does (validation reads them); rendering is training's
            from pipeline.train.model.templates import chat_text

            return chat_text(tokenizer, messages)
        return "\n".join(completion_text(m) for m in messages) + tokenizer.eos_token
    return f"{prompt}{completion}{tokenizer.eos_token}"


def model_path(path: str) -> str:
    """A stage=rm run directory's final/ model, else ``path`` as given (model dir, adapter dir, hub id)."""
    local = Path(path)
    if local.is_dir() and not _is_model_dir(local) and _is_model_dir(local / "final"):
        return str(local / "final")
    return path


@functools.lru_cache(maxsize=4)
def load_reward_model(path: str, device: str) -> tuple[Any, Any]:
    """(frozen model on ``device``, its tokenizer, left-truncating and padded); cached so eval reuses training's."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dtype = torch.float32 if device == "cpu" else "auto"  # CPU: fp32 is the fast path; a GPU keeps the saved dtype
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
        model = model.merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
    if model.config.num_labels != 1:
        raise ValueError(f"reward model {path} has num_labels={model.config.num_labels}; a reward model outputs one "
                         "score (num_labels=1), as stage=rm (TRL's RewardTrainer) trains it.")
    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_path(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # the score is read at the last non-pad token, and the end of a long text is what is being judged
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    return model.to(device).eval(), tokenizer


def check(term_name: str, term: Any) -> list[str]:
    key, path = f"reward.terms.{term_name}", term_field(term, "model", "")
    problems = []
    local = Path(path).expanduser()
    if path.startswith(CHAIN_REF):
        return [f"{key}.model={path}: step {path[len(CHAIN_REF):]} runs after the step that uses this term; put it "
                f"earlier in stage.stages."]
    looks_local = path.startswith((".", "/", "~")) or local.exists() or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path)
    if looks_local and not (local.is_dir() and _is_model_dir(Path(model_path(str(local))))):
        problems.append(f"{key}.model={path}: no model there (a directory with config.json or adapter_config.json, "
                        "or a run directory with final/). Give a saved reward model, a stage=rm run or a hub id.")
    if term_field(term, "kwargs", None):
        problems.append(f"{key}.kwargs: a reward_model term takes none (its fields: {', '.join(FIELDS)}); remove them.")
    for field in ("batch_size", "max_length"):
        value = term_field(term, field, None)
        if value is not None and value < 1:
            problems.append(f"{key}.{field}={value} must be >= 1.")
    return problems


def _tokenizer_path(path: str) -> str:
    # An adapter saved without its tokenizer reads the base model's.
    adapter = Path(path) / "adapter_config.json"
    if adapter.is_file() and not (Path(path) / "tokenizer_config.json").is_file():
        return json.loads(adapter.read_text()).get("base_model_name_or_path") or path
    return path


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


register_kind("reward_model", TermKind(
    build=RewardModel, check=check, fields=FIELDS, required=("model",),
    example="set reward.terms.{term}.model=PATH (a reward model dir, a stage=rm run) or a hub id.",
))


def place_reward_models(funcs: list[Any], device: Any) -> None:
    """Score the reward-model terms among bound ``funcs`` on ``device`` (before their first call loads them)."""
    for fn in funcs:
        scorer = getattr(getattr(fn, "term", None), "fn", None)
        if isinstance(scorer, RewardModel):
            scorer.to(device)
