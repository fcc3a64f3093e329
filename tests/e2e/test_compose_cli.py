"""pipeline/run.py at the command line: a bad override fails at compose time, --cfg job prints the config and loads
nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tests.helpers.runs import REPO, offline_env


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage=bogus", "stage=bogus: no such option (no conf/stage/bogus.yaml). Fix: one of chain, distill, dpo"),
        ("stage.num_generation=4", "stage.num_generation: no such key in GRPOStageConfig. Fix: check the spelling"),
        ("stage.learning_rate=fast", "could not be converted to Float"),
        ("hw.precision=bf17", "expected one of [auto, fp32, bf16, fp16]"),
        ("data.on_bad_row=ignore", "expected one of [error, skip]"),
    ],
)
def test_bad_overrides_fail_at_compose_time(override: str, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "run.py"), override],
        capture_output=True, text=True, env=offline_env(), cwd=REPO, timeout=120,
    )
    assert proc.returncode != 0
    assert message in proc.stderr


def test_cfg_job_prints_config_without_loading_anything() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / "pipeline" / "run.py"), "stage=sft", "--cfg", "job"],
        capture_output=True, text=True, env=offline_env(), cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    composed = OmegaConf.create(proc.stdout)
    assert composed.stage.name == "sft" and composed.model.name == "smollm2_135m"
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers", "trl", "datasets"}
