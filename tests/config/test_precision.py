"""hw.precision=auto (pipeline/config/precision.py): bf16 autocast on a CPU with bf16 instructions, fp32 on one
without, decided from the CPU's own flags at run time; explicit bf16 on a CPU without them is refused with why."""

from __future__ import annotations

import pytest

from pipeline.config import precision
from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.enums import Device, Precision
from pipeline.config.precision import choose_precision, cpu_flags
from tests.helpers.runs import compose_config

EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 vaes\n\nprocessor\t: 1\n"
OLDER = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n"


def test_the_flags_come_from_the_first_processor_and_a_missing_file_has_none(tmp_path) -> None:
    (tmp_path / "cpuinfo").write_text(EPYC)
    assert "avx512_bf16" in cpu_flags(tmp_path / "cpuinfo")
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize(("text", "zero", "want"), [(EPYC, 0, Precision.bf16), (OLDER, 0, Precision.fp32),
                                                    ("", 0, Precision.fp32), (EPYC, 2, Precision.fp32)])
def test_auto_follows_the_cpu(tmp_path, text: str, zero: int, want: Precision) -> None:
    (tmp_path / "cpuinfo").write_text(text)
    chosen, why = choose_precision(Device.cpu, zero, cpu_flags(tmp_path / "cpuinfo"))
    assert chosen == want and chosen.value in why
    assert choose_precision(Device.cuda, 0, frozenset())[0] == Precision.bf16


@pytest.mark.parametrize(("text", "want"), [(EPYC, Precision.bf16), (OLDER, Precision.fp32)])
def test_the_cpu_profile_resolves_auto_before_anything_loads(monkeypatch, caplog, tmp_path, text, want) -> None:
    (tmp_path / "cpuinfo").write_text(text)
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(tmp_path / "cpuinfo"))
    composed = compose_config(["hw=cpu", "model=tiny", "hw.precision=auto"])
    assert composed.hw.precision == "auto"
    with caplog.at_level("INFO", logger="pipeline.config.precision"):
        assert to_run_config(composed).hw.precision == want
    assert f"hw.precision=auto -> {want.value}" in caplog.text


def test_bf16_on_a_cpu_without_bf16_instructions_is_refused_with_the_reason(monkeypatch, tmp_path) -> None:
    (tmp_path / "cpuinfo").write_text(OLDER)
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(tmp_path / "cpuinfo"))
    with pytest.raises(ConfigError, match=r"hw.precision=bf16 .*emulated: 1.6-1.8x slower.*Fix: hw.precision=auto"):
        to_run_config(compose_config(["hw=cpu", "model=tiny", "hw.precision=bf16"]))
    (tmp_path / "cpuinfo").write_text(EPYC)
    assert to_run_config(compose_config(["hw=cpu", "model=tiny", "hw.precision=bf16"])).hw.precision == Precision.bf16
