"""How a step is cut into passes (hw.micro_batch, SFT padding-free, GRPO padding trimming) is a speed/memory choice:
the losses and gradient norms of a run must not depend on it."""

from __future__ import annotations

import pytest

from tests.helpers.runs import TINY, logged, run_pipeline

SFT = ["stage=sft", "stage.batch_size=8", "max_steps=3"]
GRPO = ["stage=grpo", "stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8",
        "reward=shaped", "max_steps=2"]


def run_steps(tmp_path, model_cache, name: str, args: list[str]) -> tuple[dict[int, dict], str]:
    run_dir = tmp_path / name
    proc = run_pipeline([*TINY, *args, f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return logged(run_dir), proc.stdout + proc.stderr


def assert_same_training(a: dict[int, dict], b: dict[int, dict], steps: int) -> None:
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    for step in a:
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=1e-4, abs=1e-6), step
        assert a[step]["grad_norm"] == pytest.approx(b[step]["grad_norm"], rel=1e-3), step


def test_sft_padding_free_micro_batches_train_like_padded_single_rows(tmp_path, model_cache) -> None:
    packed, log = run_steps(tmp_path, model_cache, "pf", [*SFT, "hw.micro_batch=4"])
    assert "padding-free off" not in log
    assert "padding-free rows were attended one row at a time (" in log  # hw.row_attention ran
    padded, log = run_steps(tmp_path, model_cache, "padded", [*SFT, "hw.micro_batch=1", "stage.padding_free=false"])
    assert "attended one row at a time" not in log
    assert_same_training(packed, padded, 3)


def test_grpo_trimmed_micro_batches_train_like_one_pass(tmp_path, model_cache) -> None:
    small, _ = run_steps(tmp_path, model_cache, "mb1", [*GRPO, "hw.micro_batch=1"])
    whole, _ = run_steps(tmp_path, model_cache, "mb8", [*GRPO, "hw.micro_batch=8"])
    assert any(row["grad_norm"] > 0 for row in small.values())
    assert_same_training(small, whole, 2)
