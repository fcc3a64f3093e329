"""stage=distill through pipeline/run.py on the tiny model with a tiny teacher of another shape (same tokenizer):
2 steps on one process, the run dir read back (our knobs and a stage.trl field reached TRL's DistillationConfig, the
adapter trained); a chain whose SFT step teaches the distill step (chain:sft, a run's LoRA adapter as the teacher);
and 2 gloo ranks under ZeRO-2 and ZeRO-3 (the teacher sharded). Real TRL trainers in a subprocess, nothing mocked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.launch.launcher import free_port
from tests.helpers.distributed import RUN, TWO_RANKS, check_two_rank_run, launch
from tests.helpers.runs import TINY, run_pipeline, scalars
from tests.helpers.stage_checks import TRL_PASS_THROUGH, check_run_dir
from tests.helpers.tiny_models import tiny_teacher

# one completion per prompt: 8 prompts per step, 8 tokens each; beta/temperature off TRL's defaults
DISTILL = ["stage=distill", "stage.batch_size=8", "stage.max_completion_length=8", "stage.beta=0.5",
           "stage.temperature=0.9", "stage.learning_rate=1e-2", TRL_PASS_THROUGH["distill"][0]]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_teacher(tmp_path_factory.mktemp("teacher") / "model")


def test_distill_runs_from_a_tiny_teacher(teacher: Path, tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline([*DISTILL, *TINY, f"stage.teacher={teacher}", "eval.every_steps=1", f"output_dir={run_dir}",
                         "logging.samples_every=2", f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the completions table at step 2: it used to crash at the first sample step (distill keeps no rewards)
    steps = {json.loads(line)["step"] for line in (run_dir / "samples" / "completions.jsonl").open()}
    assert steps == {2}
    assert "same tokenizer as the student (49152 tokens" in proc.stdout + proc.stderr
    check_run_dir(run_dir, "distill", 2, model_cache)
    logged = scalars(run_dir)
    # the JSD is >= 0 and, between two different random models, not 0
    assert all(loss > 0 for loss in logged["train/loss"])
    # evaluation during training and best/ as in the other stages; the loss signs watch it (health/*)
    assert len(logged["eval/accuracy"]) == 2 and (run_dir / "best" / "adapter_model.safetensors").is_file()
    assert logged["train/health/loss_flat"] == [0.0, 0.0]


def test_a_teacher_of_another_tokenizer_is_refused_before_the_student_loads(tmp_path: Path,
                                                                              model_cache: Path) -> None:
    # same embedding rows, one token more in the tokenizer: only the tokenizer check can tell
    other = tiny_teacher(tmp_path / "other", vocab=49152, extra_token="<|teacher_only|>")
    proc = run_pipeline([*DISTILL, *TINY, f"stage.teacher={other}", f"output_dir={tmp_path / 'run'}",
                         f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "has a tokenizer vocabulary of 49153 tokens, the student model=tiny 49152" in proc.stderr
    assert not (tmp_path / "run" / "samples").exists()  # nothing trained nor measured


@pytest.mark.slow
def test_distill_in_a_chain_learns_from_the_sft_step(tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "chain"
    tiny = [o for o in TINY if not o.startswith("stage.")]  # a chain's knobs are per step
    proc = run_pipeline([*tiny, "stage=chain", "stage.stages=[sft,distill]", "stage.sft.batch_size=8",
                         "stage.sft.learning_rate=5e-2", "stage.sft.eval_max_new_tokens=4",
                         "stage.distill.batch_size=8", "stage.distill.max_completion_length=8",
                         "stage.distill.eval_max_new_tokens=4", "stage.distill.teacher=chain:sft",
                         f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "teacher: tiny's adapter" in proc.stdout + proc.stderr  # the SFT run's adapter on its base
    assert (run_dir / "2_distill" / "final" / "adapter_model.safetensors").is_file()
    # the student starts from the SFT result too, so at the first step it IS the teacher: a divergence of ~0 shows
    # the teacher loaded is the SFT model (the base alone, without the adapter merged, would be far from it)
    assert scalars(run_dir / "2_distill")["train/loss"][0] < 1e-4


@pytest.mark.slow
@pytest.mark.usefixtures("deepspeed_ops")
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_distill_on_two_ranks(zero: str, teacher: Path, tmp_path: Path, model_cache: Path) -> None:
    overrides = [*DISTILL, *TINY, *TWO_RANKS, f"stage.teacher={teacher}", f"paths.output_root={tmp_path}",
                 f"paths.cache_dir={model_cache}", f"zero={zero}"]
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
               str(free_port()), RUN, *overrides]
    proc = launch(command, tmp_path, f"ds-{zero}-distill")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    check_two_rank_run(tmp_path, "distill", output, f"deepspeed-{zero}", model_cache)
    if zero == "zero3":  # the teacher, like the student, loaded as each rank's shard (as DPO's reference model)
        assert output.count("ZeRO-3 sharded teacher: this rank holds") == 2, output[-3000:]
