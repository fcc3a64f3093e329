"""Secrets stay in the environment: HF_TOKEN / WANDB_API_KEY canaries never reach .hydra/, logs, TensorBoard,
samples or checkpoints; tokens cannot be passed as overrides; checkpoint code never runs unless the model config
turns trust_remote_code on."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from pipeline.config.checks import to_run_config
from pipeline.config.schema import HwConfig, ModelConfig, QuantConfig
from tests.conftest import CONF, TINY, compose_config, run_pipeline

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


def test_ordinary_overrides_pass_the_secret_check() -> None:
    from pipeline.config.secrets import secret_overrides

    argv = ["run.py", "model=tiny", "stage.max_length=1024", "data.path=tokens.jsonl", "hw.hostfile=hosts",
            f"model.revision={'0123456789abcdef' * 2}01234567"]
    assert secret_overrides(argv) == []
    assert secret_overrides(["run.py", "+model.hub_token=x"]) == ["model.hub_token"]
    assert secret_overrides(["run.py", "+logging.wandb_api_key=x", f"run_id=hf_{'a1' * 17}"]) == [
        "logging.wandb_api_key", "run_id"
    ]


def test_trust_remote_code_is_off_in_every_model_option() -> None:
    for option in sorted(p.stem for p in (CONF / "model").glob("*.yaml")):
        cfg = to_run_config(compose_config([f"model={option}"]))
        assert cfg.model.trust_remote_code is False, option


def test_code_shipped_with_a_checkpoint_does_not_run(tmp_path: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from pipeline.train.model.build import load_model

    model_dir, marker = tmp_path / "model", tmp_path / "code_ran"
    arch = dict(to_run_config(compose_config(TINY)).model.arch)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(model_dir)
    (model_dir / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    raw = json.loads((model_dir / "config.json").read_text())
    raw["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(raw))

    model = load_model(ModelConfig(name="shipped", path=str(model_dir)), QuantConfig(), HwConfig(name="cpu"),
                       str(tmp_path / "cache"))
    assert type(model).__name__ == "Qwen3ForCausalLM" and not marker.exists()
    with pytest.raises(AttributeError):  # evil.py defines no classes; importing it is the point
        AutoModelForCausalLM.from_pretrained(str(model_dir), trust_remote_code=True, local_files_only=True)
    # With trust_remote_code=True transformers would import evil.py: the marker shows what the default prevents.
    assert marker.exists()
