"""Every seed recipe as an experiment: it composes and validates as shipped (hub names are not touched) and with its
smoke settings, and its recipe values are the seed's (the 2-step runs are in tests/e2e/test_experiments.py)."""

from __future__ import annotations

import pytest

from pipeline.config.checks import to_run_config
from tests.helpers.data import DATA
from tests.helpers.experiments import SMOKE
from tests.helpers.runs import CONF, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


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


def test_group_pref_and_chains_are_validated_before_anything_loads() -> None:
    with pytest.raises(ValueError, match="stage=group_pref needs columns prompt, responses, scores"):
        to_run_config(compose_config(["stage=group_pref", "data=jsonl", f"data.path={DATA / 'preference.jsonl'}"]))
    # each sub-stage of a chain is checked as the run it will be
    with pytest.raises(ValueError, match="stage.batch_size=6 .* not divisible by stage.num_generations=4"):
        to_run_config(compose_config(["stage=sft_then_grpo", "stage.grpo.batch_size=6",
                                      "stage.grpo.num_generations=4"]))
    with pytest.raises(ValueError, match=r"stage.stages=\['sft', 'ppo'\]"):
        to_run_config(compose_config(["stage=sft_then_grpo", "stage.stages=[sft,ppo]"]))
