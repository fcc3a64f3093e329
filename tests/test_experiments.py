"""Every seed recipe as an experiment: it composes and validates as shipped (hub names are not touched), its
recipe values are the seed's, and it runs 2 steps on the tiny model through pipeline/run.py with its data
pointed at a small fixture (hub names) and small lengths/batches.

Smoke times per experiment (2 CPU cores, incl. ~8 s of imports per process) are in the README "Experiments".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.config.checks import to_run_config
from tests.conftest import CONF, REPO, compose_config, run_pipeline
from tests.test_e2e import scalars

FORMATS = REPO / "tests" / "fixtures" / "formats"
DATA = REPO / "tests" / "fixtures" / "data"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

# Small everything: a few rows, 8 generated tokens, 2 completions per prompt, greedy eval of 4 tokens.
GRPO_SMALL = ["stage.batch_size=4", "stage.num_generations=2", "stage.max_completion_length=8",
              "stage.eval_max_new_tokens=4"]
CHAIN_SMALL = ["stage.sft.batch_size=2", "stage.sft.max_length=128", "stage.sft.eval_max_new_tokens=4"]
SMOKE: dict[str, list[str]] = {
    "s1k_grpo_qwen3_1.7b": [f"data.path={FORMATS / 's1k.jsonl'}", f"data.eval_path={FORMATS / 's1k.jsonl'}",
                            "stage.warmup_steps=0", *GRPO_SMALL],
    "s1k_group_pref_qwen3_1.7b": [f"data.path={FORMATS / 'scored_groups.jsonl'}", "stage.batch_size=2",
                                  "stage.max_length=64", "stage.warmup_steps=0"],
    "gsm8k_grpo_qwen2.5_1.5b": [f"data.path={FORMATS / 'gsm8k.jsonl'}", "data.eval_split=null",
                                "data.on_bad_row=skip", "data.eval_size=1", "stage.beta=0.04", *GRPO_SMALL],
    "gsm8k_grpo_smol": [f"data.path={FORMATS / 'gsm8k.jsonl'}", "data.eval_split=null", "data.on_bad_row=skip",
                        "data.eval_size=1", "stage.logging_steps=1", *GRPO_SMALL],
    "mcq_grpo_qlora": [f"data.path={FORMATS / 'mcq.tsv'}", "data.eval_size=1", "stage.logging_steps=1", *GRPO_SMALL],
    "medical_sft_then_grpo_qwen3": [
        f"data.path={FORMATS / 'medical.jsonl'}", "data.subset=null", *CHAIN_SMALL,
        *[f"stage.grpo.{o.split('.', 1)[1]}" for o in GRPO_SMALL]],
    "medical_sft_then_grpo_qwen3_qlora": [
        f"data.path={FORMATS / 'medical.jsonl'}", "data.subset=null", *CHAIN_SMALL,
        *[f"stage.grpo.{o.split('.', 1)[1]}" for o in GRPO_SMALL]],
    "huanhuan_sft": [f"data.path={DATA / 'alpaca.json'}", "stage.batch_size=2", "stage.max_length=128",
                     "stage.logging_steps=1"],
    "zhihu_dpo": [f"data.path={DATA / 'preference.jsonl'}", *CHAIN_SMALL, "stage.dpo.batch_size=2",
                  "stage.dpo.max_length=128"],
}


def test_every_experiment_has_a_smoke_run() -> None:
    assert sorted(SMOKE) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates_as_shipped(name: str) -> None:
    cfg = to_run_config(compose_config([f"experiment={name}"]))
    assert cfg.stage.name in ("sft", "dpo", "grpo", "group_pref", "sft_then_grpo", "sft_then_dpo")
    assert cfg.model.name != "tiny"
    # and with the smoke overrides the tests run
    assert to_run_config(compose_config([f"experiment={name}", "model=tiny", *SMOKE[name]])).model.name == "tiny"


def recipe(name: str):
    return to_run_config(compose_config([f"experiment={name}"]))


def test_s1k_recipe_is_the_seed() -> None:
    c = recipe("s1k_grpo_qwen3_1.7b")
    s = c.stage
    assert (c.model.name, s.name, c.data.path, c.data.format.value) == ("qwen3_1.7b", "grpo", "simplescaling/s1K-1.1",
                                                                         "s1k")
    assert (s.learning_rate, s.batch_size, s.warmup_steps, s.lr_scheduler, s.max_grad_norm, c.max_steps) == (
        2e-5, 16, 200, "cosine", 1.0, 2000)
    p = c.peft
    assert (p.r, p.alpha, p.dropout, list(p.target_modules)) == (16, 32, 0.05, ["q_proj", "k_proj", "v_proj",
                                                                                "o_proj"])
    assert c.hw.gradient_checkpointing
    # the variants the seed offers: full fine-tuning, 8-bit base
    assert to_run_config(compose_config(["experiment=s1k_grpo_qwen3_1.7b", "peft=full"])).peft.method.value == "full"
    assert to_run_config(compose_config(["experiment=s1k_grpo_qwen3_1.7b", "quant=int8"])).quant.method.value == "int8"


def test_gsm8k_recipe_is_the_seed() -> None:
    c = recipe("gsm8k_grpo_qwen2.5_1.5b")
    s = c.stage
    assert (c.model.name, c.data.format.value, c.reward.name) == ("qwen2.5_1.5b_instruct", "gsm8k", "gsm8k_xml")
    assert (s.num_generations, s.max_completion_length, s.save_steps, c.logging.samples_every) == (16, 512, 50, 10)
    assert "<reasoning>" in c.data.system_prompt


def test_medical_recipes_are_the_seed() -> None:
    lora, qlora = recipe("medical_sft_then_grpo_qwen3"), recipe("medical_sft_then_grpo_qwen3_qlora")
    for c, lr, dropout, quant in ((lora, 1e-6, 0.05, "none"), (qlora, 5e-7, 0.1, "nf4")):
        g = c.stage.grpo
        assert (c.stage.stages, g.learning_rate, g.beta, g.num_generations, g.max_completion_length) == (
            ["sft", "grpo"], lr, 0.001, 4, 512)
        assert (c.peft.dropout, c.quant.method.value, c.reward.name) == (dropout, quant, "medical")


def test_mcq_recipe_is_the_seed() -> None:
    c = recipe("mcq_grpo_qlora")
    assert (c.quant.method.value, c.quant.double_quant, c.peft.r, c.peft.alpha) == ("nf4", True, 16, 32)
    assert len(c.peft.target_modules) == 7 and c.data.on_bad_row.value == "skip"
    assert (c.stage.learning_rate, c.stage.batch_size, c.data.predictions_file) == (3e-5, 32, "predictions.csv")


def test_handbook_recipes_are_the_seed() -> None:
    h, z, g = recipe("huanhuan_sft"), recipe("zhihu_dpo"), recipe("gsm8k_grpo_smol")
    assert (h.stage.learning_rate, h.stage.batch_size, h.stage.num_epochs, h.peft.r, h.peft.alpha) == (
        1e-4, 16, 3, 8, 16)
    assert (h.quant.method.value, h.data.format.value, h.stage.max_length) == ("nf4", "alpaca", 4096)
    assert (z.stage.stages, z.stage.sft.learning_rate, z.stage.dpo.learning_rate, z.stage.dpo.beta) == (
        ["sft", "dpo"], 1e-5, 1e-6, 0.1)
    assert (g.reward.name, len(g.data.few_shot), g.stage.num_generations, g.stage.learning_rate) == (
        "gsm8k_smol", 2, 4, 5e-6)


def _check_run_dir(run_dir: Path, steps: int) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == steps
    losses = scalars(run_dir)["train/loss"]
    assert len(losses) == steps and all(math.isfinite(v) for v in losses)
    assert (run_dir / "final").is_dir() and not (run_dir / "final.partial").exists()
    return summary


# Every recipe composes and validates by default (above); these run 2 steps only with -m slow (the default suite's
# time): their stage/format/reward combination runs by default in another recipe or an e2e test.
SLOW_SMOKE = {"gsm8k_grpo_qwen2.5_1.5b", "s1k_grpo_qwen3_1.7b", "s1k_group_pref_qwen3_1.7b",
              "medical_sft_then_grpo_qwen3", "huanhuan_sft", "zhihu_dpo"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_SMOKE else n
                                  for n in EXPERIMENTS])
def test_experiment_runs_two_steps_on_the_tiny_model(name: str, tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline(
        [f"experiment={name}", "model=tiny", "max_steps=2", "hw.eval_batch=8", *SMOKE[name],
         f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"],
        cwd=tmp_path, OMP_NUM_THREADS="2",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    if name.startswith(("medical", "zhihu")):
        first, second = summary["stages"]
        assert summary["steps"] == 4 and second["final_dir"] == summary["final_dir"]
        _check_run_dir(run_dir / "1_sft", 2)
        _check_run_dir(run_dir / f"2_{summary['stage'].split('_')[-1]}", 2)
        # the second stage started from the first one's adapter
        assert f"from {run_dir / '1_sft' / 'final'}" in proc.stdout + proc.stderr
        return
    _check_run_dir(run_dir, 2)
    if name == "mcq_grpo_qlora":
        assert summary["dropped_by_reason"] == {"empty field 'question'": 1, "correct_answer not A-D": 1}
        lines = (run_dir / "predictions.csv").read_text().splitlines()
        assert lines[0] == "id,answer" and len(lines) == 2 and lines[1].split(",")[0] in {"q1", "q2", "q4", "q6"}
    if name.startswith("gsm8k"):
        assert summary["dropped_rows"] == 1 and summary["eval_problems"] == 1
    if name == "gsm8k_grpo_smol":
        # one curve per reward term, besides the weighted total
        logged = scalars(run_dir)
        assert all(f"train/rewards/{t}/mean" in logged for t in ("xmlcount", "soft_format", "int_answer",
                                                                  "correctness"))


def test_group_pref_and_chains_are_validated_before_anything_loads() -> None:
    with pytest.raises(ValueError, match="stage=group_pref needs columns prompt, responses, scores"):
        to_run_config(compose_config(["stage=group_pref", "data=jsonl", f"data.path={DATA / 'preference.jsonl'}"]))
    # each sub-stage of a chain is checked as the run it will be
    with pytest.raises(ValueError, match="stage.batch_size=6 .* not divisible by stage.num_generations=4"):
        to_run_config(compose_config(["stage=sft_then_grpo", "stage.grpo.batch_size=6",
                                      "stage.grpo.num_generations=4"]))
    with pytest.raises(ValueError, match=r"stage.stages=\['sft', 'ppo'\]"):
        to_run_config(compose_config(["stage=sft_then_grpo", "stage.stages=[sft,ppo]"]))


def test_chain_resumes_at_the_first_unfinished_stage_and_hands_over_a_full_model(tmp_path: Path,
                                                                                 model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["stage=sft_then_dpo", "model=tiny", "peft=full", "data=jsonl", f"data.path={DATA / 'preference.jsonl'}",
            "max_steps=1", *CHAIN_SMALL, "stage.dpo.batch_size=2", "stage.dpo.max_length=128",
            f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"]
    first = run_pipeline(args, cwd=tmp_path, OMP_NUM_THREADS="2")
    assert first.returncode == 0, first.stderr[-4000:]
    sft_summary = (run_dir / "1_sft" / "summary.json").stat().st_mtime
    # the DPO stage "was interrupted": its dir is gone; the same command redoes only that stage
    import shutil

    shutil.rmtree(run_dir / "2_dpo")
    second = run_pipeline(args, cwd=tmp_path, OMP_NUM_THREADS="2")
    out = second.stdout + second.stderr
    assert second.returncode == 0, second.stderr[-4000:]
    assert "sft already finished" in out and "starting from the full model" in out
    assert (run_dir / "1_sft" / "summary.json").stat().st_mtime == sft_summary
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    assert (run_dir / "2_dpo" / "final" / "model.safetensors").exists()
