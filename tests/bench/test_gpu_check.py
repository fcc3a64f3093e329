"""bench/gpu_check.sh --dry: the GPU check's steps, time boxes, wheel list and report, on CPU with model=tiny.

The default suite runs the script end to end with one step (plain SFT) and the wheel-list check; the whole dry
run (every step, DeepSpeed and nf4 included) is in -m slow. Neither proves anything about a GPU: they prove the
script a GPU machine will run does what it says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import REPO, offline_env

SCRIPT = str(REPO / "bench" / "gpu_check.sh")


def dry(out: Path, *only: str) -> subprocess.CompletedProcess:
    env = offline_env(PYTHON=sys.executable, OMP_NUM_THREADS="2")
    command = ["bash", SCRIPT, "--dry", str(out)]
    if only:  # gpu_check.py's --only, through the wrapper's exec
        command = [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry", "--only", ",".join(only), str(out)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.e2e  # the dry check trains through pipeline/run.py
def test_dry_gpu_check_one_step_writes_its_table(tmp_path: Path) -> None:
    proc = dry(tmp_path, "sft_bf16")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry"] is True and report["device"] == "cpu"
    assert set(report["results"]) == {"wheel_list", "sft_bf16"}
    # the wheel list pins exactly the versions this environment tested
    assert report["results"]["wheel_list"]["status"] == "ok"
    sft = report["results"]["sft_bf16"]
    assert sft["status"] == "ok" and sft["peak_gib"] > 0 and sft["estimate_gib"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| sft_bf16 | ok |" in table and table.strip() in proc.stdout


def test_a_run_past_its_time_box_is_killed_and_recorded() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_check

    status, _ = gpu_check._wait(subprocess.Popen(["sleep", "30"]), 1)
    assert status == "timed out (1 s)"


@pytest.mark.slow
@pytest.mark.e2e
def test_dry_gpu_check_runs_every_step(tmp_path: Path) -> None:
    proc = dry(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())["results"]
    assert [r["status"] for r in results.values()].count("ok") == 7
    assert results["bench_grpo_gpu"]["status"] == results["bench_sft_gpu"]["status"] == "skipped (no CUDA)"
