"""ZeRO-3 loading on 2 CPU ranks reads each rank's partitions straight from the checkpoint (pipeline/train/
zero3_slices.py): the loaded weights, gathered back, are exactly the checkpoint's, and each rank holds half.
Runs the `zero3_load` bench case's own child (bench/load_peak.py) on the tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import REPO, offline_env

sys.path.insert(0, str(REPO / "bench"))
import zero3_load  # noqa: E402

# DeepSpeed's CPU all-reduce extension is built once, before the first of these launches
pytestmark = pytest.mark.usefixtures("deepspeed_ops")


def test_each_rank_reads_its_own_partitions_and_they_equal_the_checkpoint(tmp_path: Path) -> None:
    from pipeline.launch.launcher import free_port

    # the random weights are written once, by one process (as the bench case does)
    subprocess.run([sys.executable, zero3_load.CHILD, "--materialise", str(tmp_path / "m"),
                    *zero3_load.overrides("tiny", "none")], cwd=REPO, env=offline_env(), check=True,
                   capture_output=True)
    ranks = zero3_load.run_profile("tiny", "zero3", tmp_path / "out", free_port())
    for report in ranks:
        assert report["sharded"] and report["weights_differing"] == []
        assert any("each rank read its own partitions" in line for line in report["loader"]), report["loader"]
        assert report["weight_elements_held"] * 2 == pytest.approx(report["weight_elements_total"], rel=0.01)
        # the memory per phase of the load (bench/load_peak.py MemoryTimeline): each phase sampled, in order
        phases = report["timeline"]["phases"]
        assert {"training_args", "build_model", "read_weights"} <= set(phases), phases
        assert all(m["rss_gb"] == pytest.approx(m["anon_gb"] + m["file_gb"] + m["shmem_gb"], abs=0.002)
                   for m in phases.values())
        assert report["timeline"]["series_t_phase_anon_file_shmem_gb"][-1][1] == "read_weights"


def test_a_weight_the_checkpoint_lacks_is_initialised_alike_on_every_rank(tmp_path: Path) -> None:
    """A reward model's score head is not in a causal LM's checkpoint: zero.Init no longer broadcasts weights as
    they are created (the load overwrites them), so the head's values must come from transformers' initialisation
    of missing weights (rank 0's, broadcast). Different values per rank would train a different model on each."""
    from pipeline.launch.launcher import free_port

    subprocess.run([sys.executable, zero3_load.CHILD, "--materialise", str(tmp_path / "m"),
                    *zero3_load.overrides("tiny", "none")], cwd=REPO, env=offline_env(), check=True,
                   capture_output=True)
    ranks = zero3_load.run_profile("tiny", "zero3", tmp_path / "out", free_port(), ("--reward-head",))
    assert [r["weights_differing"] for r in ranks] == [[], []]
    sums = [r["new_weight_sums"] for r in ranks]
    assert list(sums[0]) == ["score.weight"], sums
    assert sums[0] == sums[1] and sums[0]["score.weight"] != 0.0, sums
