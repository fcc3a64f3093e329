"""Benchmark cases: the same workload expressed as pipeline overrides and as plain-TRL baseline arguments.

The baseline (bench/baseline.py) composes the same overrides only to get the same weights, rows, global batch,
lengths, learning rate, steps, seed and dtype, then builds TRL's trainer the way the TRL docs show, keeping TRL's
defaults for everything else. What differs is only what our pipeline chooses on top of TRL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


@dataclass(frozen=True)
class Case:
    name: str
    stage: str
    # pipeline/run.py overrides (model, data, batch, lengths); the harness adds steps, output and cache paths
    ours: list[str]
    steps: int
    # completions per optimizer step (GRPO) or rows per step (SFT/DPO)
    batch: int
    needs_cuda: bool = False
    notes: str = ""
    extra_files: list[Path] = field(default_factory=list)


SMOL = ["model=smollm2_135m", "peft=lora", "logging=none", "data.arithmetic.num_eval=0"]
# the gsm8k_grpo_smol recipe's prompts (XML system prompt + one-shot example + question), its LoRA without dropout, on
# the local GSM8K copy; rewards stay the recipe's on our side (the baseline scores correctness)
LONGPROMPT = ["experiment=gsm8k_grpo_smol", f"data.path={GSM8K}", "data.eval_split=null", "logging=none",
              "peft.dropout=0.0", "stage.batch_size=32", "stage.num_generations=8",
              "stage.max_completion_length=128", "stage.learning_rate=3e-4"]

CASES = {
    "grpo_cpu": Case(
        name="grpo_cpu", stage="grpo", steps=4, batch=32,
        # hw=cpu's micro-batch: the arithmetic recipe's 32 is tuned for its 16-token completions (at 64 tokens it
        # took 25.0 s a step and 6.1 GB in fp32, 2.06x plain TRL: bench/results/grpo_cpu-fp32-20261207-181713.json)
        ours=[*SMOL, "stage=grpo", "stage.batch_size=32", "stage.num_generations=4",
              "stage.max_completion_length=64", "stage.learning_rate=3e-4", "hw.micro_batch=2"],
        notes="SmolLM2-135M + LoRA r16, 8 prompts x 4 completions x 64 tokens, arithmetic prompts",
    ),
    "grpo_cpu_tools": Case(
        name="grpo_cpu_tools", stage="grpo", steps=3, batch=16,
        ours=[*SMOL, "stage=grpo", "model.chat_template=qwen2.5", "env=calculator", "stage.batch_size=16",
              "stage.num_generations=4", "stage.max_completion_length=96", "stage.learning_rate=3e-4"],
        notes="SmolLM2-135M + LoRA r16, env=calculator (up to 4 tool turns per episode), 4 arithmetic prompts x 4 "
              "completions x 96 tokens; the baseline gets the same calculate tool and tool-turn cap",
    ),
    "grpo_cpu_longprompt": Case(
        name="grpo_cpu_longprompt", stage="grpo", steps=2, batch=32,
        ours=LONGPROMPT,
        notes="SmolLM2-135M + LoRA r16, 4 GSM8K prompts (system prompt + one-shot example, ~200 tokens) x 8 x 128",
        extra_files=[GSM8K],
    ),
    "grpo_cpu_longprompt_shared": Case(
        name="grpo_cpu_longprompt_shared", stage="grpo", steps=2, batch=32,
        ours=[*LONGPROMPT, "stage.shared_prefix=true", "hw.micro_batch=8"],
        notes="grpo_cpu_longprompt with each group's prompt forwarded once on our side (stage.shared_prefix=true, "
              "one whole group of 8 per micro-batch)",
        extra_files=[GSM8K],
    ),
    "sft_cpu": Case(
        name="sft_cpu", stage="sft", steps=6, batch=8,
        ours=[*SMOL, "stage=sft", "data=jsonl", f"data.path={GSM8K}",
              "data.columns={question: prompt, answer: completion}", "stage.batch_size=8",
              "stage.max_length=1024", "stage.learning_rate=2e-4"],
        notes="SmolLM2-135M + LoRA r16, GSM8K question -> worked answer (mixed lengths, 60-400 tokens)",
        extra_files=[GSM8K],
    ),
    "dpo_cpu": Case(
        name="dpo_cpu", stage="dpo", steps=4, batch=8,
        ours=[*SMOL, "stage=dpo", "stage.batch_size=8", "stage.max_length=128", "stage.learning_rate=5e-5"],
        notes="SmolLM2-135M + LoRA r16, arithmetic preference pairs (rejected = wrong sum)",
    ),
    "dpo_cpu_rows": Case(
        name="dpo_cpu_rows", stage="dpo", steps=4, batch=8,
        ours=[*SMOL, "stage=dpo", "stage.batch_size=8", "stage.max_length=128", "stage.learning_rate=5e-5",
              "stage.shared_prefix=false"],
        notes="dpo_cpu with TRL's per-row forwards on our side too (stage.shared_prefix=false; on in dpo_cpu)",
    ),
    "grpo_gpu": Case(
        name="grpo_gpu", stage="grpo", steps=5, batch=64, needs_cuda=True,
        ours=["model=qwen2.5_0.5b_shape", "peft=lora", "logging=none", "data.arithmetic.num_eval=0", "hw=single_4090",
              "stage=grpo", "stage.batch_size=64", "stage.num_generations=8", "stage.max_completion_length=256"],
        notes="Qwen2.5-0.5B shapes (random weights) + LoRA, 8 prompts x 8 completions x 256 tokens, bf16",
    ),
    "sft_gpu": Case(
        name="sft_gpu", stage="sft", steps=10, batch=16, needs_cuda=True,
        ours=["model=qwen2.5_0.5b_shape", "peft=full", "logging=none", "data.arithmetic.num_eval=0", "hw=single_4090",
              "stage=sft", "data=jsonl", f"data.path={GSM8K}", "data.columns={question: prompt, answer: completion}",
              "stage.batch_size=16", "stage.max_length=1024"],
        notes="Qwen2.5-0.5B shapes (random weights), full fine-tuning, GSM8K mixed lengths, bf16",
        extra_files=[GSM8K],
    ),
}
