"""Process groups on the CPU: a stale extension-build lock is named before ranks wait on it; a rank left waiting fails
naming itself and where."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.launch.launcher import free_port
from tests.helpers.runs import REPO, offline_env


def test_a_lock_left_by_a_killed_extension_build_is_named_before_the_ranks_wait_on_it(tmp_path, monkeypatch,
                                                                                     caplog) -> None:
    from pipeline.train.runtime.distributed import STALE_BUILD_LOCK_S, warn_stale_build_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    old, fresh = tmp_path / "deepspeed_shm_comm" / "lock", tmp_path / "py311_cpu" / "cpu_adam" / "lock"
    for lock in (old, fresh):
        lock.parent.mkdir(parents=True)
        lock.touch()
    an_hour_ago = time.time() - 2 * STALE_BUILD_LOCK_S
    os.utime(old, (an_hour_ago, an_hour_ago))
    with caplog.at_level(logging.WARNING):
        assert warn_stale_build_locks() == [str(old)]  # a build in progress (fresh lock) is left alone
    assert f"{old} is 60 min old" in caplog.text and "delete that file" in caplog.text


@pytest.mark.e2e  # a 2-rank launch (torch.distributed.run)
def test_a_rank_left_waiting_fails_naming_itself_and_where(tmp_path) -> None:
    """Real gloo, 2 ranks: rank 1 never joins rank 0's barrier; rank 0 fails after the time-out instead of hanging."""
    script = tmp_path / "wait.py"
    script.write_text(textwrap.dedent("""
        import datetime, time
        import torch.distributed as dist
        from pipeline.train.runtime.distributed import explain_timeouts

        def wait_for_peers():
            dist.barrier()

        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=3))
        with explain_timeouts(3):
            if dist.get_rank() == 0:
                wait_for_peers()
            else:
                time.sleep(10)
    """))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script)]
    proc = subprocess.run(command, cwd=REPO, env=offline_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "CollectiveTimeout: rank 0/2 waited more than hw.collective_timeout_s=3 s" in output, output[-3000:]
    assert "in wait_for_peers (" in output
