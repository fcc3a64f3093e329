"""export: a LoRA run merges and refuses to overwrite; a QLoRA run merges into the dequantized base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import run_tool
from tests.helpers.runs import train_tiny as train

IDS = torch.tensor([[1, 2, 3, 4, 5, 6]])


def _adapter_logits(run_dir: Path) -> torch.Tensor:
    from pipeline.tools.tuned import load_tuned

    model, _ = load_tuned(run_dir)
    with torch.no_grad():
        return model(IDS).logits.float()


def _export_logits(out: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out))
    with torch.no_grad():
        return model(IDS).logits


def test_export_merges_lora_and_refuses_to_overwrite(lora_run: Path) -> None:
    proc = run_tool("export", str(lora_run), cwd=lora_run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = lora_run / "export"
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names and "adapter_config.json" not in names
    assert torch.allclose(_export_logits(out), _adapter_logits(lora_run), atol=1e-4)

    from pipeline.tools.export import ExportError, export_run

    stamp = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(ExportError, match="already exists. Fix: force=true"):
        export_run(lora_run)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert export_run(lora_run, force=True) == out and not (lora_run / "export.partial").exists()
    assert (out / "model.safetensors").stat().st_mtime_ns != stamp


@pytest.mark.e2e  # trains its own QLoRA run through pipeline/run.py
def test_export_qlora_merges_into_the_dequantized_base(tmp_path: Path) -> None:
    run_dir = train(tmp_path, "quant=nf4")
    out = tmp_path / "merged"
    proc = run_tool("export", str(run_dir), f"out={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    # The adapter corrects the 4-bit weights it was trained on: the merge must reproduce that model (up to the
    # 4-bit kernel's own rounding, measured ~5e-3), far closer than a merge into the original fp32 base (~0.13).
    trained = _adapter_logits(run_dir)
    merged_error = (_export_logits(out) - trained).abs().max()
    naive_error = (_naive_merge_logits(run_dir) - trained).abs().max()
    assert merged_error < 1e-2 and merged_error * 10 < naive_error, (merged_error, naive_error)


def _naive_merge_logits(run_dir: Path) -> torch.Tensor:
    from peft import PeftModel

    from pipeline.config.schema import QuantConfig
    from pipeline.tools.tuned import load_base, run_config

    base = load_base(run_config(run_dir), QuantConfig())
    model = PeftModel.from_pretrained(base, str(run_dir / "final")).merge_and_unload()
    with torch.no_grad():
        return model(IDS).logits
