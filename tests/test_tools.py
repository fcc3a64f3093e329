"""The tools for a finished run: evaluate (alone and compare=base), export (LoRA and QLoRA merge), chat.

Runs are real 2-step trainings of the tiny model; the tools run as the user starts them (python -m ...)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.tools.evaluate import _write_outputs, is_mcq
from tests.conftest import offline_env
from tests.conftest import train_tiny as train

IDS = torch.tensor([[1, 2, 3, 4, 5, 6]])


def tool(module: str, *args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"pipeline.tools.{module}", *args], env=offline_env(), input=stdin,
                          capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("lora"))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_evaluate_compare_base_matches_the_runs_own_measurements(lora_run: Path) -> None:
    proc = tool("evaluate", str(lora_run), "compare=base", cwd=lora_run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "base" in proc.stdout and "tuned" in proc.stdout and "accuracy" in proc.stdout
    report = json.loads((lora_run / "eval" / "eval.json").read_text())
    summary = json.loads((lora_run / "summary.json").read_text())
    assert report["problems"] == 8 and list(report["models"]) == ["base", "tuned"]
    assert report["models"]["tuned"]["accuracy"] == summary["accuracy_after"]
    assert report["models"]["base"]["accuracy"] == summary["accuracy_before"]
    # Reloaded from disk, greedy: the same completions the run itself produced before and after training.
    rows = jsonl(lora_run / "eval" / "predictions.jsonl")
    after, before = jsonl(lora_run / "samples/eval_after.jsonl"), jsonl(lora_run / "samples/eval_before.jsonl")
    assert [r["tuned_completion"] for r in rows] == [r["completion"] for r in after]
    assert [r["base_completion"] for r in rows] == [r["completion"] for r in before]
    assert any(r["tuned_completion"] != r["base_completion"] for r in rows), "the adapter was not applied"


def test_evaluate_refuses_an_unfinished_run_and_bad_options(lora_run: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((lora_run / "config.yaml").read_text())
    proc = tool("evaluate", str(tmp_path))
    assert proc.returncode == 2 and "did not finish" in proc.stderr and "resume=auto" in proc.stderr
    proc = tool("evaluate", str(lora_run), "limt=3")
    assert proc.returncode == 2 and "unknown option 'limt=3'" in proc.stderr


def test_mcq_scoring_and_csv_predictions(tmp_path: Path) -> None:
    assert is_mcq("mcq", ["1"]) and is_mcq("auto", ["A", "d "]) and not is_mcq("auto", ["A", "12"])
    _write_outputs(tmp_path, {"models": {}}, [{"prompt": "q", "answer": "B", "tuned_completion": "B",
                                               "tuned_correct": True}], mcq=True)
    assert (tmp_path / "predictions.csv").read_text().splitlines() == [
        "prompt,answer,tuned_completion,tuned_correct", "q,B,B,True"
    ]
    assert (tmp_path / "eval.json").exists()


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
    proc = tool("export", str(lora_run), cwd=lora_run.parent)
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


def test_export_qlora_merges_into_the_dequantized_base(tmp_path: Path) -> None:
    run_dir = train(tmp_path, "quant=nf4")
    out = tmp_path / "merged"
    proc = tool("export", str(run_dir), f"out={out}", cwd=tmp_path)
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


def test_chat_uses_the_template_and_keeps_the_conversation(lora_run: Path) -> None:
    from pipeline.tools.chat import chat
    from pipeline.tools.tuned import load_tuned
    from pipeline.train.observe.heldout import generate_greedy

    model, tokenizer = load_tuned(lora_run)
    out = io.StringIO()
    history = chat(model, tokenizer, io.StringIO("What is 2 + 3?\nAnd 4 + 4?\n/reset\nhi\n"), out, max_new_tokens=6)
    first = generate_greedy(model, tokenizer, [[{"role": "user", "content": "What is 2 + 3?"}]], 6)[0].strip()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"assistant> {first}" and "(conversation cleared)" in lines
    # After /reset only the last exchange remains.
    assert [m["role"] for m in history] == ["user", "assistant"] and history[0]["content"] == "hi"

    proc = tool("chat", str(lora_run), "max_new_tokens=6", stdin="What is 2 + 3?\n", cwd=lora_run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"assistant> {first}"
