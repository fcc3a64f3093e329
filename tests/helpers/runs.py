"""The repo's paths, Hydra composition, pipeline/run.py in a subprocess, and reading a finished run dir back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from pipeline.config.schema import register_configs

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
FIXTURES = REPO / "tests" / "fixtures"
# DeepSpeed JIT-builds its CPU ops (shm_comm ~40 s, cpu_adam ~55 s) on first use: one build for every test, every
# session and every rank, under the repo's git-ignored .cache/.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

# Fixtures that give a finished run through pipeline/run.py, or build for 2-rank launches: a test using one is an
# end-to-end test wherever it lives (tests/conftest.py marks it e2e; tests/sanity/test_layout.py relies on it).
E2E_FIXTURES = frozenset({"tiny_run", "lora_run", "tool_run", "deepspeed_ops"})
# What starts pipeline/run.py (or a 2-rank launch of it) from a test: a test calling one is end-to-end.
PIPELINE_STARTERS = {
    "tests.helpers.runs": {"run_pipeline", "train_tiny", "train_tiny_tools"},
    "tests.helpers.resume": {"start"},
    "tests.helpers.distributed": {"launch", "RUN"},
}

# Small, fast settings for the tiny random model; each e2e run stays a few seconds after imports.
TINY = [
    "model=tiny",
    "max_steps=2",
    "data.arithmetic.num_train=64",
    "data.arithmetic.num_eval=8",
    "stage.eval_max_new_tokens=4",
    "hw.eval_batch=8",
    # the same numbers on every CPU (hw=cpu's auto picks bf16 where the CPU has it; the bf16 paths have their tests)
    "hw.precision=fp32",
]


def compose_config(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def offline_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # `python -m pipeline...` from another cwd imports the checkout under test, not another install of it
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_pipeline(args: list[str], cwd: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "run.py"), *args],
        cwd=cwd, env=offline_env(**env), capture_output=True, text=True, timeout=timeout,
    )


def train_tiny(tmp: Path, *extra: str) -> Path:
    """A finished 2-step SFT run of the tiny model in tmp/run (LoRA unless extra says otherwise)."""
    run_dir = tmp / "run"
    # A high lr so the adapter visibly changes the outputs after 2 steps.
    proc = run_pipeline([*TINY, "stage=sft", "stage.batch_size=8", "stage.learning_rate=5e-2", *extra,
                         f"output_dir={run_dir}", f"paths.cache_dir={tmp / 'cache'}"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def train_tiny_tools(tmp: Path) -> Path:
    """A finished 2-step GRPO run of the tiny model with env=calculator and the shipped qwen2.5 template (what a
    tool run saves: config.yaml naming its tools, a tokenizer whose template renders them) in tmp/run."""
    run_dir = tmp / "run"
    proc = run_pipeline([*TINY, "stage=grpo", "stage.batch_size=4", "stage.num_generations=4",
                         "stage.max_completion_length=8", "model.chat_template=qwen2.5", "env=calculator",
                         f"output_dir={run_dir}", f"paths.cache_dir={tmp / 'cache'}"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def tiny_model_dir(cache: Path) -> Path:
    """The cached `model=tiny` checkpoint itself: other tests may cache tiny variants (+model.arch...) beside it."""
    from pipeline.train.model.build import model_dir

    return Path(model_dir(OmegaConf.to_object(compose_config(["model=tiny"])).model, str(cache)))


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """tag -> the values a run logged to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def logged(run_dir: Path) -> dict[int, dict]:
    """step -> the training log of that step (later lines win, as after a resume)."""
    rows = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.endswith("}") else {}
            if "loss" in row:
                rows[row["step"]] = row
    return rows


def adapter_loads_onto_the_base(final: Path, cache: Path) -> None:
    """The saved adapter loads onto the cached tiny base and changes its output."""
    import torch
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


def run_tool(module: str, *args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """python -m pipeline.tools.MODULE ARGS, as the user starts it."""
    return subprocess.run([sys.executable, "-m", f"pipeline.tools.{module}", *args], env=offline_env(), input=stdin,
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def trl_args(final: Path):
    """The TRL config the trainer really ran with (Trainer.save_model writes it beside the weights)."""
    import torch

    return torch.load(final / "training_args.bin", weights_only=False)


def check_reward_model(final: Path, summary: dict) -> None:
    """What stage=rm leaves: held-out pair accuracy, no generated answers, a full model a reward term loads."""
    import torch
    from transformers import AutoModelForSequenceClassification

    assert summary["heldout_pairs"] == 16 and 0.0 <= summary["pair_accuracy"] <= 1.0
    assert summary["accuracy_before"] is None  # a reward model does not generate answers
    # a full model (LoRA merged), loadable as is by a reward-model term
    assert not (final / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(str(final))
    with torch.no_grad():
        scores = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert scores.shape == (1, 1) and torch.isfinite(scores).all()
