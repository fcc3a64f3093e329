"""The benchmark harness's own arithmetic and plumbing (the benchmarks themselves run outside the test suite)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.helpers.runs import REPO, compose_config, tiny_model_dir

sys.path.insert(0, str(REPO / "bench"))

from cases import CASES  # noqa: E402
from measure import Measurement, mfu  # noqa: E402
from run import table  # noqa: E402


def test_mfu_is_six_n_tokens_over_the_devices_peak() -> None:
    assert mfu(1000.0, 10**9, "NVIDIA H100 80GB HBM3") == pytest.approx(6e12 / 989e12)
    assert mfu(1000.0, 10**9, "NVIDIA A100-SXM4-80GB") == pytest.approx(6e12 / 312e12)
    assert mfu(1000.0, 10**9, "some unknown accelerator") == 0.0


def test_mfu_parameter_count_matches_the_loaded_model(model_cache) -> None:
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from pipeline.launch.memory import model_shapes

    path = tiny_model_dir(model_cache)  # materialised on first use
    loaded = AutoModelForCausalLM.from_pretrained(path)
    tiny = OmegaConf.to_object(compose_config(["model=tiny"])).model
    assert model_shapes(tiny).params == sum(p.numel() for p in loaded.parameters())


def measurement(side: str, samples: float, peak: float) -> Measurement:
    return Measurement(side=side, steps=4, train_runtime_s=10, samples_per_s=samples, tokens_per_s=samples * 100,
                       gen_tokens_per_s=0.0, step_time_s=10 / samples, peak_mem_gb=peak, wall_s=60)


def test_table_reports_medians_and_ratios_and_skips_empty_metrics() -> None:
    runs = {"ours": [measurement("ours", 3.0, 2.0), measurement("ours", 1.0, 2.2), measurement("ours", 2.0, 2.1)],
            "baseline": [measurement("baseline", 1.0, 8.0), measurement("baseline", 1.0, 8.4)]}
    text, summary = table(CASES["grpo_cpu"], runs)
    assert summary["samples_per_s"] == {"ours": 2.0, "baseline": 1.0, "ratio": 2.0}
    assert summary["peak_mem_gb"]["ratio"] == pytest.approx(2.1 / 8.2)
    # generated tokens and MFU were 0 on both sides: no row
    assert "gen_tokens_per_s" not in summary and "mfu" not in text
    assert "| samples_per_s | 2.000 | 1.000 | 2.00x |" in text


def test_child_runs_the_script_with_its_arguments_and_keeps_its_exit_code(tmp_path) -> None:
    script = tmp_path / "side.py"
    script.write_text("import sys\nprint('args', sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    peak = tmp_path / "peak"
    ok = subprocess.run([sys.executable, str(REPO / "bench" / "child.py"), str(peak), str(script), "0", "x"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "args ['0', 'x']" in ok.stdout
    failed = subprocess.run([sys.executable, str(REPO / "bench" / "child.py"), str(peak), str(script), "3"],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 3
    # no CUDA here: the harness falls back to the process's max RSS
    assert not peak.exists() or torch.cuda.is_available()
