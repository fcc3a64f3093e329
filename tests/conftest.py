"""Shared test helpers: the repo root, Hydra composition, and running pipeline/run.py in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from pipeline.config.schema import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# DeepSpeed JIT-builds its CPU ops (shm_comm ~40 s, cpu_adam ~55 s) on first use: one build for every test, every
# session and every rank, under the repo's git-ignored .cache/.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

# Small, fast settings for the tiny random model; each e2e run stays a few seconds after imports.
TINY = [
    "model=tiny",
    "max_steps=2",
    "data.arithmetic.num_train=64",
    "data.arithmetic.num_eval=8",
    "stage.eval_max_new_tokens=4",
    "hw.eval_batch=8",
]


def compose_config(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def offline_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # `python -m pipeline...` from another cwd imports the checkout under test, not another install of it
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_pipeline(args: list[str], cwd: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "run.py"), *args],
        cwd=cwd, env=offline_env(**env), capture_output=True, text=True, timeout=timeout,
    )


def train_tiny(tmp: Path, *extra: str) -> Path:
    """A finished 2-step SFT run of the tiny model in tmp/run (LoRA unless extra says otherwise)."""
    run_dir = tmp / "run"
    # A high lr so the adapter visibly changes the outputs after 2 steps.
    proc = run_pipeline([*TINY, "stage=sft", "stage.batch_size=8", "stage.learning_rate=5e-2", *extra,
                         f"output_dir={run_dir}", f"paths.cache_dir={tmp / 'cache'}"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


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


def tiny_model_dir(cache: Path) -> Path:
    """The cached `model=tiny` checkpoint itself: other tests may cache tiny variants (+model.arch...) beside it."""
    from pipeline.train.model.build import model_dir

    return Path(model_dir(OmegaConf.to_object(compose_config(["model=tiny"])).model, str(cache)))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for converted/random models across the session's runs."""
    return tmp_path_factory.mktemp("model_cache")
