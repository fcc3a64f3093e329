"""Every hw x zero x quant combination composes and validates, or is refused with the message that fixes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.checks import to_run_config
from tests.helpers.runs import CONF, compose_config

HW = sorted(p.stem for p in (CONF / "hw").glob("*.yaml"))
ZERO = sorted(p.stem for p in (CONF / "zero").glob("*.yaml"))
QUANT = ["none", "int8", "nf4"]


def test_the_issue_s_profiles_are_shipped() -> None:
    assert {"cpu", "cpu_2proc", "single_4090", "single_a100_80g", "dual_3090", "8xh100", "2x8xh100"} <= set(HW)
    assert ZERO == sorted(["none", "zero1", "zero2", "zero2_offload", "zero3", "zero3_offload", "fsdp2"])


@pytest.mark.parametrize("hw", HW)
@pytest.mark.parametrize("zero", ZERO)
@pytest.mark.parametrize("quant", QUANT)
def test_hw_zero_quant_matrix(hw: str, zero: str, quant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = compose_config([f"hw={hw}", f"zero={zero}", f"quant={quant}", "peft=lora", "model=tiny"])
    if quant != "none" and zero == "zero3_offload":
        with pytest.raises(ValueError, match=f"quant={quant} with zero={zero}: offloading bitsandbytes'") as err:
            to_run_config(cfg)
        assert "Use zero=zero3 with QLoRA" in str(err.value)
        return
    if zero == "fsdp2" and (quant != "none" or compose_config([f"hw={hw}"]).hw.num_processes == 1):
        # FSDP2 shards over several ranks, and cannot shard bitsandbytes' packed weights (tests/config/test_fsdp2.py)
        with pytest.raises(ValueError, match="zero=fsdp2"):
            to_run_config(cfg)
        return
    run_cfg = to_run_config(cfg)
    assert (run_cfg.hw.name, run_cfg.zero.name, run_cfg.quant.method.value) == (hw, zero, quant)
    # the global batch always splits exactly: micro-batch x processes x accumulation
    from pipeline.config.derived import split_batch, world_size

    per_device, accum = split_batch(run_cfg)
    assert per_device * accum * world_size(run_cfg) == run_cfg.stage.batch_size


@pytest.mark.parametrize(
    ("hw", "zero"),
    [("cpu", "none"), ("cpu_2proc", "none"), ("single_4090", "none"), ("single_a100_80g", "none"),
     ("dual_3090", "zero2"), ("8xh100", "zero2"), ("2x8xh100", "zero3")],
)
def test_each_profile_picks_its_default_zero(hw: str, zero: str) -> None:
    assert compose_config([f"hw={hw}"]).zero.name == zero


def test_profiles_own_processes_precision_and_memory() -> None:
    table = {hw: compose_config([f"hw={hw}"]).hw for hw in HW}
    assert (table["cpu_2proc"].num_processes, table["cpu_2proc"].precision) == (2, "fp32")
    assert (table["single_4090"].memory_gb, table["single_4090"].precision) == (24, "bf16")
    assert table["single_4090"].gradient_checkpointing and not table["single_a100_80g"].gradient_checkpointing
    assert (table["dual_3090"].num_processes, table["dual_3090"].memory_gb) == (2, 24)
    assert (table["8xh100"].num_processes, table["8xh100"].launcher) == (8, "deepspeed")
    assert (table["2x8xh100"].num_nodes, table["2x8xh100"].hostfile) == (2, "hostfiles/two_nodes")


REFUSED = [
    (["zero=none", "zero.offload_optimizer=true"], "offload is a DeepSpeed feature. Pick zero=zero2_offload"),
    (["zero=zero2", "zero.offload_params=true"], "zero.offload_params=true needs ZeRO-3"),
    (["hw=cpu_2proc", "hw.precision=fp16"], "hw.precision=fp16 with hw.device=cpu (hw=cpu_2proc): fp16 autocast"),
    # refused whatever the CPU (tests/config/test_precision_auto.py covers bf16 with and without its instructions)
    (["hw=cpu_2proc", "zero=zero2", "hw.precision=bf16"], "DeepSpeed's bf16 mode is not proven on CPU ranks"),
    (["hw=8xh100", "stage=grpo", "stage.num_generations=12"],
     "stage.batch_size=32 (completions per step) is not divisible by stage.num_generations=12"),
    (["hw=8xh100", "stage.batch_size=36"], "stage.batch_size=36 does not split over 8 processes (hw=8xh100)"),
    (["hw=2x8xh100", "hw.hostfile=hostfiles/nowhere"], "hw.hostfile=hostfiles/nowhere: no such file"),
    (["zero=zero2", "zero.config_file=zero9.json"], "zero.config_file=zero9.json: not found in ds_configs/"),
    (["hw=dual_3090", "zero=zero3_offload", "quant=nf4"], "quant=nf4 with zero=zero3_offload: offloading"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=lambda x: str(x))
def test_refused_before_any_model_loads(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        to_run_config(compose_config(["model=tiny", *overrides]))
    assert message in str(err.value)


def test_bad_hostfile_line_is_refused_with_file_and_line(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 slots=8\n10.0.0.2 slots:8\n")
    with pytest.raises(ValueError, match=r"hosts:2: '10.0.0.2 slots:8' is not '<host> slots=<N>'"):
        to_run_config(compose_config(["hw=2x8xh100", f"hw.hostfile={hosts}"]))
