"""pipeline/train/checkpoint/changes.py: a resume's config against its checkpoint's, key by key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.train.checkpoint.changes import ResumeChangeError, check_resume_changes, differences

OLD = {"seed": 42, "run_id": "a", "max_steps": 2, "stage": {"name": "sft", "learning_rate": 2e-4, "trl": {}},
       "model": {"name": "tiny"}}


def checkpoint(tmp: Path) -> str:
    (tmp / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(OLD)))
    return str(tmp / "checkpoints" / "checkpoint-2")


def changed(**stage: object) -> dict:
    return {**OLD, "run_id": "b", "max_steps": 4, "stage": {**OLD["stage"], **stage}}


def test_differences_are_dotted_and_skip_bookkeeping() -> None:
    new = changed(learning_rate=0.5, trl={"adam_beta1": 0.8})
    assert differences(OLD, new) == {"max_steps": (2, 4), "stage.learning_rate": (2e-4, 0.5),
                                     "stage.trl.adam_beta1": (None, 0.8)}
    assert differences(OLD, {**OLD, "run_id": "other", "resume": "auto"}) == {}


def test_checkpoint_and_logging_keys_change_freely(tmp_path: Path, caplog) -> None:
    new = {**OLD, "stage": {**OLD["stage"], "save_steps": 2}, "logging": {"level": "debug"}}
    with caplog.at_level(logging.INFO, logger="pipeline.train.checkpoint.changes"):
        check_resume_changes(checkpoint(tmp_path), new, allow=False)
    assert "stage.save_steps: None -> 2" in caplog.text and "logging.level" in caplog.text


def test_refused_with_every_difference_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ResumeChangeError) as raised:
        check_resume_changes(checkpoint(tmp_path), changed(learning_rate=0.5), allow=False)
    text = str(raised.value)
    assert "2 value(s) differ" in text and "max_steps: 2 -> 4" in text and "stage.learning_rate: 0.0002 -> 0.5" in text
    assert "checkpoint's base learning rate" in text and "resume.allow_changes=true" in text


def test_allowed_says_what_applies_and_what_the_restored_state_overrides(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.train.checkpoint.changes"):
        check_resume_changes(checkpoint(tmp_path), changed(learning_rate=0.5), allow=True)
    applies, overridden = caplog.text.split("takes effect from the resumed step:")[1].split("does NOT take effect")
    assert "max_steps: 2 -> 4" in applies and "learning_rate" not in applies
    assert "stage.learning_rate: 0.0002 -> 0.5" in overridden


def test_a_changed_model_is_refused_even_when_allowed(tmp_path: Path) -> None:
    with pytest.raises(ResumeChangeError, match="(?s)model.name: 'tiny' -> 'other'.*start a new run"):
        check_resume_changes(checkpoint(tmp_path), {**OLD, "model": {"name": "other"}}, allow=True)


def test_unchanged_or_no_config_is_silent(tmp_path: Path) -> None:
    check_resume_changes(checkpoint(tmp_path), dict(OLD), allow=False)
    check_resume_changes(str(tmp_path / "elsewhere" / "checkpoints" / "checkpoint-1"), changed(), allow=False)
