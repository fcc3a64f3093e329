"""zero=fsdp2's rules, refused before any model loads with the fix in the message; the hw profiles that can choose
it; its per-GPU memory estimate; its launch (tests/e2e/test_fsdp2.py trains it on 2 CPU ranks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.checks import to_run_config
from pipeline.config.derived import fsdp2, shards_weights
from pipeline.config.plan import plan_run
from pipeline.launch.launcher import dry_run_report
from pipeline.launch.memory import estimate
from tests.helpers.runs import compose_config

REFUSED = [
    (["hw=cpu"], "zero=fsdp2 with hw=cpu: FSDP2 shards over several processes and this run has one"),
    (["hw=cpu_2proc", "quant=nf4"], "quant=nf4 with zero=fsdp2: FSDP2's sharded load cannot shard bitsandbytes'"),
    (["hw=cpu_2proc", "quant=int8"], "Use zero=zero2 with QLoRA, or quant=none"),
    (["hw=cpu_2proc", "zero.stage=3"], "zero.stage and zero.config_file are DeepSpeed's"),
    (["hw=cpu_2proc", "zero.offload_params=true"], "CPU offload is not wired for FSDP2 here"),
    (["hw=cpu_2proc", "peft.init=pissa"], "need whole weights, which ZeRO-3 and FSDP2 shard"),
    # a LoRA chain's second step starts from the first step's adapter, which cannot merge into sharded weights
    (["hw=cpu_2proc", "stage=sft_then_grpo", "peft=lora"], "is a LoRA adapter and zero=fsdp2 shards the base"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=lambda x: str(x))
def test_refused_before_any_model_loads(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        to_run_config(compose_config(["model=tiny", "zero=fsdp2", *overrides]))
    assert message in str(err.value)


def test_an_adapter_as_init_from_is_refused(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="python -m pipeline.tools.export RUN"):
        to_run_config(compose_config(["model=tiny", "zero=fsdp2", "hw=cpu_2proc", f"init_from={tmp_path}"]))


@pytest.mark.parametrize("hw", ["cpu_2proc", "8xh100", "2x8xh100"])
@pytest.mark.parametrize("peft", ["lora", "full"])
def test_profiles_choose_it(hw: str, peft: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = to_run_config(compose_config([f"hw={hw}", "zero=fsdp2", f"peft={peft}", "model=tiny"]))
    assert fsdp2(cfg) and shards_weights(cfg) and cfg.zero.stage == 0
    assert not fsdp2(to_run_config(compose_config([f"hw={hw}", "model=tiny"])))


def test_memory_estimate_shards_weights_and_full_fine_tuning_state() -> None:
    base = ["model=qwen2.5_1.5b_instruct", "hw=8xh100"]
    plans = {(z, p): plan_run(compose_config([*base, f"zero={z}", f"peft={p}"]), Path("/tmp/run"))
             for z in ("none", "zero3", "fsdp2") for p in ("full", "lora")}
    parts = {key: estimate(plan).parts for key, plan in plans.items()}
    full, lora = parts[("fsdp2", "full")], parts[("fsdp2", "lora")]
    for name in ("weights", "gradients", "optimizer"):
        assert full[name] == pytest.approx(parts[("none", "full")][name] / 8)
    # a LoRA adapter is attached after sharding: its gradients and optimizer states stay whole on every rank
    assert lora["weights"] == pytest.approx(parts[("none", "lora")]["weights"] / 8)
    assert lora["optimizer"] == pytest.approx(parts[("none", "lora")]["optimizer"])
    # two decoder layers whole (the one computing, the one prefetched): Qwen2.5-1.5B's ~1.3B non-embedding / 28
    layer_gib = (1.544e9 - 151936 * 1536) / 28 * 2 / 2**30
    assert full["fsdp2 gather"] == pytest.approx(2 * layer_gib, rel=0.02)
    assert "fsdp2 gather" not in parts[("zero3", "full")]
    report = dry_run_report(compose_config([*base, "zero=fsdp2"]), plans[("fsdp2", "lora")], ["zero=fsdp2"])
    assert "zero=fsdp2" in report and "fsdp2 gather" in report
