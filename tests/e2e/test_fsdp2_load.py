"""The `fsdp2_load` bench case's own rank child (bench/fsdp2_load.py) on the tiny model, 2 CPU ranks through
torchrun: each rank loads sharded, holds half the weights and reports its memory per phase of the load in the same
timeline as the ZeRO-3 child (bench/load_peak.py), so `python bench/run.py fsdp2_load` cannot break unseen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import REPO, offline_env

sys.path.insert(0, str(REPO / "bench"))
import fsdp2_load  # noqa: E402
import zero3_load  # noqa: E402


def test_each_fsdp2_rank_holds_half_and_reports_its_load_phase_by_phase(tmp_path: Path) -> None:
    from pipeline.launch.launcher import free_port

    subprocess.run([sys.executable, zero3_load.CHILD, "--materialise", str(tmp_path / "m"),
                    *zero3_load.overrides("tiny", "none")], cwd=REPO, env=offline_env(), check=True,
                   capture_output=True)
    ranks = fsdp2_load.fsdp2_ranks("tiny", tmp_path / "out", free_port())
    assert [r["rank"] for r in ranks] == [0, 1]
    for report in ranks:
        assert report["sharded"] and report["zero"] == "fsdp2", report
        assert report["weight_elements_held"] * 2 == pytest.approx(report["weight_elements_total"], rel=0.01)
        phases = report["timeline"]["phases"]
        assert list(phases) == ["training_args", "build_model", "read_weights"], phases
        assert report["peak_rss_gb"] >= max(m["rss_gb"] for m in phases.values()) - 0.01
    lines = zero3_load.phase_lines({"fsdp2": ranks})
    assert len(lines) == 4 and lines[2].startswith("| fsdp2 | 0 | training_args: "), lines
