"""dry_run=true through pipeline/run.py: the composed config, the launch command and the memory estimate, nothing
trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.runs import REPO, offline_env, run_pipeline


def test_chain_dry_run_prints_each_steps_memory(tmp_path: Path) -> None:
    proc = run_pipeline(["stage=sft_then_grpo", "model=tiny", "dry_run=true", f"paths.output_root={tmp_path}"],
                        cwd=REPO, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1_sft: per-GPU memory estimate" in proc.stdout and "2_grpo: per-GPU memory estimate" in proc.stdout


def run_dry(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "run.py"), "dry_run=true", *args],
        capture_output=True, text=True, env=offline_env(RUN_ID="dry"), cwd=REPO, timeout=180,
    )


def test_dry_run_8xh100_prints_config_command_and_memory(tmp_path: Path) -> None:
    proc = run_dry(["hw=8xh100", "model=qwen2.5_1.5b_instruct", f"paths.output_root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "# ---- composed config" in out and "name: 8xh100" in out and "name: zero2" in out
    (command,) = [line for line in out.splitlines() if line.startswith("RUN_ID=dry ")]
    assert command.startswith("RUN_ID=dry deepspeed --num_gpus 8 --master_port 29500 pipeline/run.py ")
    assert "hw=8xh100" in command and f"output_dir={tmp_path}/grpo/dry" in command and " dry_run=" not in command
    assert "1.544B params" in out and "18.46M trainable (lora)" in out and "zero=zero2, world size 8" in out
    assert "of 80 GiB (hw=8xh100)" in out and "WARNING" not in out
    # nothing was trained: no run artefacts besides Hydra's own record
    assert not list(tmp_path.rglob("summary.json"))


def test_dry_run_2x8xh100_uses_hostfile_zero3_and_warns_when_too_big(tmp_path: Path) -> None:
    proc = run_dry(["hw=2x8xh100", "model=qwen3_1.7b", "peft=full", "zero=zero1", "stage.max_completion_length=16384",
                    "hw.micro_batch=2", f"paths.output_root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert ("RUN_ID=dry deepspeed --hostfile hostfiles/two_nodes --num_nodes 2 --num_gpus 8 --master_port 29500 "
            "pipeline/run.py") in out
    assert "zero=zero1, world size 16" in out
    assert "WARNING: the estimate" in out and "exceeds hw.memory_gb=80" in out
    fits = run_dry(["hw=2x8xh100", "model=qwen3_1.7b", f"paths.output_root={tmp_path}"])
    assert "zero=zero3, world size 16" in fits.stdout and "WARNING" not in fits.stdout


def test_deepspeed_local_rank_argument_never_reaches_hydra(tmp_path: Path) -> None:
    proc = run_dry(["hw=cpu", "model=tiny", "--local_rank=0", f"paths.output_root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# one process, no re-launch" in proc.stdout


def test_the_gpu_tool_recipe_composes_with_its_memory_estimate(tmp_path: Path) -> None:
    proc = run_dry(["experiment=gsm8k_grpo_python_qwen2.5_1.5b", f"paths.output_root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "name: python" in out and "1.544B params" in out and "of 24 GiB (hw=single_4090)" in out
    assert "WARNING" not in out  # it fits the 24 GB card it names
