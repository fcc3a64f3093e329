"""pipeline/config/unused_libraries.py: which runs keep deepspeed and bitsandbytes out of the process."""

from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from pipeline.config.frozen import thawed
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


def test_a_tool_keeps_bitsandbytes_out_only_for_runs_trained_without_it(tmp_path, monkeypatch) -> None:
    from pipeline.tools.lean_start import keep_unused_libraries_out

    plain, quantized = plan(tmp_path / "plain"), plan(tmp_path / "nf4", "quant=nf4")
    for p in (plain, quantized):
        p.dir.write_text(p.dir.config, OmegaConf.to_yaml(OmegaConf.structured(thawed(p.cfg))))

    def hidden(*argv: str) -> bool:
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)
        monkeypatch.delitem(sys.modules, "bitsandbytes")  # absent, restored as it was at teardown
        keep_unused_libraries_out(list(argv))
        return sys.modules.get("bitsandbytes", "absent") is None

    assert hidden(str(plain.run_dir), "limit=2") and hidden(str(plain.run_dir / "final"))
    assert not hidden(str(quantized.run_dir))
    assert not hidden(str(plain.run_dir), f"compare={quantized.run_dir}")  # the other run needs it
    assert hidden(str(plain.run_dir), "compare=base")
    assert not hidden(str(tmp_path / "an_export_elsewhere"))  # not a run: it may hold a quantized model
