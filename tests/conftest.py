"""Session fixtures: the model cache, one finished tiny run, DeepSpeed's CPU extension; and the e2e marker for every
test under tests/e2e/ or using a finished run (what tests share as code lives in tests/helpers/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Before anything imports torch (the test modules, and every run the tests start, inherit os.environ): xdist's
# workers share the cores, and at torch's default of one OpenMP thread per core, two workers' runs put four
# spinning threads on two cores -- a tiny run's two SFT steps took 26-64 s that way on a loaded 2-core box, 8-15 s
# with one thread each. A test that wants more threads still sets OMP_NUM_THREADS itself.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

from tests.helpers.runs import E2E_FIXTURES, REPO, offline_env, train_tiny  # noqa: E402

E2E_DIR = REPO / "tests" / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(item.path).parents or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def no_traceback_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points called in-process (reported()) record the traceback choice in os.environ for the ranks they
    launch; without this, one such test decides for every pipeline subprocess the later tests start."""
    for name in ("PIPELINE_TRACEBACK", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def deepspeed_ops() -> None:
    """DeepSpeed's CPU all-reduce extension, built once before the first multi-process test.

    Built inside a 2-rank run, a slow first build (a loaded machine) ran into that test's time-out; the killed
    build left torch's `lock` file behind, and every later rank waited on it until its own time-out (CI's 90
    minutes went that way). Here it is built alone, with room, and a lock older than any build is deleted first.
    """
    # imported here: importing torch at collection would break the test that validation never imports it
    from pipeline.train.runtime.distributed import STALE_BUILD_LOCK_S, warn_stale_build_locks

    for lock in warn_stale_build_locks():
        os.unlink(lock)
    build = ("from deepspeed.accelerator import get_accelerator; "
             "get_accelerator().create_op_builder('ShareMemCommBuilder').load()")
    proc = subprocess.run([sys.executable, "-c", build], env=offline_env(), capture_output=True, text=True,
                          timeout=STALE_BUILD_LOCK_S)
    assert proc.returncode == 0, "DeepSpeed's shm_comm extension did not build:\n" + proc.stderr[-3000:]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny LoRA run shared by the tests that only read it (serve, web chat)."""
    return train_tiny(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for converted/random models across the session's runs."""
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny reward model in a folder, one per test module (tests/rewards/test_model.py, tests/e2e/test_rewards.py)."""
    from tests.helpers.tiny_models import tiny_rm  # torch: not at collection (see deepspeed_ops)

    return tiny_rm(tmp_path_factory.mktemp("rm") / "model")
