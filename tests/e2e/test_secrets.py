"""Secrets stay in the environment, end to end: token canaries never reach the run dir, TensorBoard or wandb, and a
token given as an override is refused."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.helpers.runs import TINY, run_pipeline

SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_env_tokens_never_reach_the_run_dir_tensorboard_or_wandb(tmp_path: Path, model_cache: Path) -> None:
    secret = f"canary-secret-{uuid.uuid4().hex}"
    # A value that *is* meant to be recorded (the run id): proves the scan sees .hydra/, logs and checkpoints.
    control = f"canary-control-{uuid.uuid4().hex}"
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        [*TINY, "stage=sft", "stage.batch_size=8", "stage.save_steps=1", "logging.samples_every=1",
         "logging=wandb", f"run_id={control}", f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
        cwd=tmp_path, **dict.fromkeys(SECRET_VARS, secret),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "checkpoint-2" / "training_args.bin").exists()
    # wandb ran offline (the default mode) into the run dir: its files are scanned too.
    assert list((run_dir / "wandb").glob("offline-run-*/files"))
    recorded = files_containing(run_dir, control.encode())
    assert any(f.startswith(".hydra/") for f in recorded) and "config.yaml" in recorded
    assert files_containing(run_dir, secret.encode()) == []
    assert secret not in proc.stdout and secret not in proc.stderr


def test_a_token_cannot_be_given_as_an_override(tmp_path: Path) -> None:
    secret = f"canary-{uuid.uuid4().hex}"
    run_dir = tmp_path / "run"
    # By key name, by the value of a secret environment variable, and by the shape of a hub token.
    cases = [([f"+hf_token={secret}"], {}), ([f"run_id={secret}"], {"WANDB_API_KEY": secret})]
    for overrides, env in cases:
        proc = run_pipeline(["model=tiny", *overrides, f"output_dir={run_dir}"], cwd=tmp_path, **env)
        assert proc.returncode == 2 and "carry a credential" in proc.stderr and "export it" in proc.stderr
        # Refused before Hydra writes anything.
        assert not run_dir.exists()
