"""Each stage runs a few steps through pipeline/run.py on the tiny model; the run dir is read back.

These are real TRL trainers in a subprocess, exactly as a user starts them; nothing is mocked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, run_pipeline, tiny_model_dir

# stage-specific knobs that keep 2 steps to a few seconds on 2 cores
STAGE_ARGS = {
    "sft": ["stage.batch_size=8"],
    "dpo": ["stage.batch_size=4"],
    # a dense reward: a random model never answers right, and all-zero rewards give zero gradients
    "grpo": ["stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8", "reward=shaped"],
}
CASES = [
    ("sft", "lora", "none"),
    pytest.param("sft", "full", "none", marks=pytest.mark.slow),  # full fine-tuning runs by default for DPO/GRPO
    ("dpo", "lora", "none"),
    ("dpo", "full", "none"),
    ("grpo", "lora", "none"),
    ("grpo", "full", "none"),
    ("grpo", "lora", "nf4"),
]


def scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tiny_initial_weights(cache: Path) -> dict[str, torch.Tensor]:
    model_dir = tiny_model_dir(cache)
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize(("stage", "peft", "quant"), CASES, ids=lambda x: x)
def test_stage_runs_and_leaves_a_complete_run_dir(stage, peft, quant, tmp_path, model_cache) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        [f"stage={stage}", f"peft={peft}", f"quant={quant}", *TINY, *STAGE_ARGS[stage],
         f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stage"], summary["peft"], summary["quant"], summary["steps"]) == (stage, peft, quant, 2)
    assert summary["eval_problems"] == 8
    assert 0.0 <= summary["accuracy_before"] <= 1.0 and 0.0 <= summary["accuracy_after"] <= 1.0
    assert summary["seconds_per_step"] > 0 and summary["wall_time_s"] > 0
    assert (run_dir / "samples" / "eval_after.jsonl").read_text().count("\n") == 8
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "config.yaml").exists()

    logged = scalars(run_dir)
    loss_tag = "train/loss"
    assert len(logged[loss_tag]) == 2 and all(math.isfinite(v) for v in logged[loss_tag])
    assert all(math.isfinite(v) for v in logged["train/learning_rate"])
    if stage == "grpo":
        assert "train/rewards/correctness/mean" in logged and "train/rewards/length/mean" in logged

    final = run_dir / "final"
    assert not (run_dir / "final.partial").exists()
    initial = tiny_initial_weights(model_cache)
    if peft == "lora":
        adapter = load_file(str(final / "adapter_model.safetensors"))
        lora_b = [t for k, t in adapter.items() if "lora_B" in k]
        # LoRA B starts at zero: any nonzero entry means the optimizer really updated the adapter.
        assert lora_b and all(t.numel() > 0 for t in lora_b)
        assert any(t.abs().max() > 0 for t in lora_b)
        _adapter_loads_onto_the_base(final, model_cache)
    else:
        trained = load_file(str(final / "model.safetensors"))
        changed = [k for k, t in trained.items() if k in initial and not torch.equal(t, initial[k])]
        assert changed, "full fine-tuning saved weights identical to the initial model"


def _adapter_loads_onto_the_base(final: Path, cache: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir = tiny_model_dir(cache)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tuned = PeftModel.from_pretrained(base, str(final))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        tuned_logits = tuned(ids).logits
        with tuned.disable_adapter():
            base_logits = tuned(ids).logits
    assert not torch.allclose(tuned_logits, base_logits), "the adapter does not change the model's output"
