"""What every finished stage run leaves in its run dir, read back: summary, config dumps, held-out samples,
TensorBoard scalars, and the final weights (an adapter that loads and changes the output, or changed full weights).
Shared by the golden runs (each stage with LoRA) and tests/e2e/test_stages.py (full fine-tuning, nf4)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers.runs import adapter_loads_onto_the_base, check_reward_model, scalars, tiny_model_dir, trl_args

# stage -> (the stage.trl pass-through override a golden run carries, the TRL args fields and values the trainer
#           must have run with, TensorBoard tags only that trainer logs)
TRL_PASS_THROUGH = {
    "kto": ("stage.trl.ref_model_sync_steps=7", {"ref_model_sync_steps": 7}, ["train/kl", "train/rewards/chosen"]),
    "orpo": ("stage.trl.max_completion_length=48", {"max_completion_length": 48},
             ["train/log_odds_ratio", "train/nll_loss"]),
    "simpo": ("stage.trl.label_smoothing=0.1", {"label_smoothing": 0.1, "loss_type": "simpo"},
              ["train/rewards/margins", "train/rewards/accuracies"]),
    "rm": ("stage.trl.center_rewards_coefficient=0.01", {"center_rewards_coefficient": 0.01},
           ["train/accuracy", "train/margin"]),
    # tests/e2e/test_stages.py: stage keys of ours and one stage.trl field; the KL is logged only when beta > 0
    "rloo": ("stage.trl.reward_clip_range=[-2.0,2.0]",
             {"num_generations": 4, "beta": 0.1, "normalize_advantages": True, "max_completion_length": 8,
              "reward_clip_range": [-2.0, 2.0]},
             ["train/kl", "train/rewards/correctness/mean"]),
    # tests/e2e/test_distill.py: beta (the divergence) off TRL's default 1.0, and a sampling field of TRL's
    "distill": ("stage.trl.top_k=20", {"beta": 0.5, "max_completion_length": 8, "temperature": 0.9, "top_k": 20},
                ["train/entropy"]),
}
GENERATING = ("sft", "dpo", "grpo", "rloo", "kto", "orpo", "simpo", "distill")


def check_run_dir(run_dir: Path, stage: str, steps: int, cache: Path, peft: str = "lora", quant: str = "none") -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stage"], summary["peft"], summary["quant"], summary["steps"]) == (stage, peft, quant, steps)
    assert summary["seconds_per_step"] > 0 and summary["wall_time_s"] > 0
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "config.yaml").exists()
    logged = scalars(run_dir)
    assert len(logged["train/loss"]) == steps and all(math.isfinite(v) for v in logged["train/loss"])
    assert all(math.isfinite(v) for v in logged["train/learning_rate"])
    if stage in ("grpo", "rloo"):
        assert "train/rewards/correctness/mean" in logged and "train/rewards/length/mean" in logged
    final = run_dir / "final"
    assert final.is_dir() and not (run_dir / "final.partial").exists()
    if stage in GENERATING:
        assert summary["eval_problems"] == 8
        assert 0.0 <= summary["accuracy_before"] <= 1.0 and 0.0 <= summary["accuracy_after"] <= 1.0
        assert (run_dir / "samples" / "eval_after.jsonl").read_text().count("\n") == 8
    if stage in TRL_PASS_THROUGH:
        _, fields, tags = TRL_PASS_THROUGH[stage]
        ran_with = trl_args(final)
        assert {f: getattr(ran_with, f) for f in fields} == fields
        assert all(tag in logged for tag in tags), sorted(logged)
    if stage == "rm":
        check_reward_model(final, summary)  # LoRA merged into a full reward model
    elif peft == "lora":
        check_adapter(final, cache)
    else:
        check_full_weights_changed(final, cache)


def check_adapter(final: Path, cache: Path) -> None:
    from safetensors.torch import load_file

    lora_b = [t for k, t in load_file(str(final / "adapter_model.safetensors")).items() if "lora_B" in k]
    # LoRA B starts at zero: any nonzero entry means the optimizer really updated the adapter.
    assert lora_b and any(t.abs().max() > 0 for t in lora_b)
    adapter_loads_onto_the_base(final, cache)


def check_full_weights_changed(final: Path, cache: Path) -> None:
    import torch
    from safetensors.torch import load_file

    initial = load_file(str(tiny_model_dir(cache) / "model.safetensors"))
    trained = load_file(str(final / "model.safetensors"))
    changed = [k for k, t in trained.items() if k in initial and not torch.equal(t, initial[k])]
    assert changed, "full fine-tuning saved weights identical to the initial model"
