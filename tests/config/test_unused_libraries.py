"""pipeline/config/unused_libraries.py: which runs keep deepspeed and bitsandbytes out of the process."""

from __future__ import annotations

import sys

import pytest

from pipeline.config.plan import plan_run
from pipeline.config.unused_libraries import hide_unused_libraries, uses_bitsandbytes, uses_deepspeed
from tests.helpers.runs import compose_config


def plan(tmp_path, *overrides: str):
    return plan_run(compose_config(["model=tiny", *overrides]), tmp_path)


def test_deepspeed_only_with_a_zero_profile(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert not uses_deepspeed(plan(tmp_path))
    assert uses_deepspeed(plan(tmp_path, "zero=zero2"))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # accelerate's own config asks for it
    assert uses_deepspeed(plan(tmp_path))


def test_bitsandbytes_only_with_quantization_or_its_optimizers(tmp_path) -> None:
    assert not uses_bitsandbytes(plan(tmp_path))
    assert uses_bitsandbytes(plan(tmp_path, "quant=nf4"))
    assert uses_bitsandbytes(plan(tmp_path, "stage.optim=paged_adamw_8bit"))
    assert not uses_bitsandbytes(plan(tmp_path, "stage=sft_then_grpo"))
    assert uses_bitsandbytes(plan(tmp_path, "stage=sft_then_grpo", "quant=nf4"))


def test_hidden_means_unavailable_and_imported_ones_stay(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    for name in ("deepspeed", "bitsandbytes", "wandb"):
        # setitem first: the teardown then restores each entry as it was (absent, or the imported module)
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "bitsandbytes", sys)  # "already imported": left alone
    hide_unused_libraries(plan(tmp_path, "logging=tensorboard"))
    assert sys.modules["deepspeed"] is None and importlib.util.find_spec("deepspeed") is None
    assert sys.modules["bitsandbytes"] is sys and sys.modules["wandb"] is None
