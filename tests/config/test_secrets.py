"""Secrets in the config: ordinary overrides pass the secret check, trust_remote_code is off in every model option,
and code shipped with a checkpoint never runs (the run-dir canaries are in tests/e2e/test_secrets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config.checks import to_run_config
from pipeline.config.schema import HwConfig, ModelConfig, QuantConfig
from tests.helpers.runs import CONF, TINY, compose_config


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
