"""Speed levers switched on through pipeline/run.py: they reach the trainer, train and save."""

from __future__ import annotations

from tests.helpers.runs import TINY, run_pipeline


def test_the_stage_switches_reach_the_trainer(tmp_path, model_cache) -> None:
    proc = run_pipeline([*TINY, "stage=grpo", "max_steps=1", "stage.batch_size=8", "stage.num_generations=4",
                         "stage.max_completion_length=8", "hw.micro_batch=4", "stage.shared_prefix=true",
                         "stage.prefill_once=true", "stage.drop_finished_rows=true",
                         f"output_dir={tmp_path / 'run'}",
                         f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shared_prefix: each prompt forwarded once per group (4 rows -> 1 packed rows" in proc.stdout + proc.stderr


def test_the_stage_switch_trains_and_saves(tmp_path, model_cache) -> None:
    proc = run_pipeline([*TINY, "stage=dpo", "stage.batch_size=4", "stage.shared_prefix=true",
                         f"output_dir={tmp_path / 'run'}", f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # hw.micro_batch 2 pairs: 4 rows, two prompts
    assert "shared_prefix: each prompt forwarded once per pair (4 rows -> 2 packed rows" in proc.stdout + proc.stderr
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").stat().st_size > 0
