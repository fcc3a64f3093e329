"""Composition of every config option and the stage x peft x quant matrix, the embedded default, top-level and
column overrides, RUN_ID, and the cross-field rules."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline.config.checks import to_run_config
from tests.helpers.conf import GROUPS, options
from tests.helpers.runs import REPO, compose_config, offline_env

# Options that need a value only the user can give (or a profile they only run under).
REQUIRED = {
    ("data", "jsonl"): ["data.path=tests/fixtures/config/prompt_answer.jsonl"],
    ("data", "llamafactory"): ["data.dataset_dir=tests/fixtures/llamafactory", "data.dataset=qa_answers"],
    ("data", "mix"): ["data.mix=[{path: tests/fixtures/config/prompt_answer.jsonl, weight: 0.5}]"],
    ("reward", "model"): ["reward.terms.rm.model=org/reward-model"],
    ("stage", "distill"): ["stage.teacher=smollm2_135m"],
    ("zero", "fsdp2"): ["hw=cpu_2proc"],  # FSDP2 shards over processes: one is refused
    ("reward", "judge"): ["reward.terms.judge.url=http://127.0.0.1:8000/v1", "reward.terms.judge.model=m"],
}


# Groups whose options write into another node.
PACKAGE = {"algo": "stage"}


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x)
)
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    overrides = [f"{group}={option}", *REQUIRED.get((group, option), [])]
    if group == "quant" and option != "none":
        overrides.append("peft=lora")
    if group == "data" and option == "gsm8k":
        # gsm8k is a hub name: validation must not touch the hub, so it passes without network.
        overrides.append("stage=grpo")
    cfg = compose_config(overrides)
    run_cfg = to_run_config(cfg)
    # algo presets are written into the stage node (`# @package stage`), not a node of their own
    assert getattr(run_cfg, PACKAGE.get(group, group)) is not None
    if group == "stage":
        assert run_cfg.stage.name == option


@pytest.mark.parametrize("stage", ["sft", "dpo", "grpo"])
@pytest.mark.parametrize("peft", ["lora", "full"])
@pytest.mark.parametrize("quant", ["none", "int8", "nf4"])
def test_stage_peft_quant_matrix(stage: str, peft: str, quant: str) -> None:
    cfg = compose_config([f"stage={stage}", f"peft={peft}", f"quant={quant}", "model=tiny"])
    if quant != "none" and peft == "full":
        with pytest.raises(ValueError, match="peft=lora"):
            to_run_config(cfg)
    else:
        assert to_run_config(cfg).stage.name == stage


def test_default_is_the_embedded_job() -> None:
    cfg = to_run_config(compose_config([]))
    assert (cfg.stage.name, cfg.model.name, cfg.data.name, cfg.peft.method.value, cfg.hw.name) == (
        "grpo", "smollm2_135m", "arithmetic", "lora", "cpu"
    )
    # the calibrated recipe (STACK_NOTES): 4 prompts x 8 completions, 16 tokens, lr 3e-4 constant, beta 0
    s = cfg.stage
    assert (s.batch_size, s.num_generations, s.max_completion_length) == (32, 8, 16)
    assert (s.learning_rate, s.lr_scheduler, s.beta) == (3e-4, "constant", 0.0)


def test_convenience_top_level_overrides() -> None:
    cfg = to_run_config(compose_config(["max_steps=7", "output_dir=/tmp/somewhere"]))
    assert cfg.max_steps == 7 and cfg.output_dir == "/tmp/somewhere"


def test_column_renames_from_the_command_line() -> None:
    # README's `data.columns='{question: prompt}'`: new names in a dict node Hydra would otherwise refuse (struct)
    renames = "data.columns={question: prompt, answer: completion}"
    cfg = compose_config(["stage=sft", "data=jsonl", "data.path=x.jsonl", renames])
    assert to_run_config(cfg).data.columns == {"question": "prompt", "answer": "completion"}
    cfg = compose_config(["stage=grpo", "data=gsm8k", "data.columns.q=prompt"])
    assert to_run_config(cfg).data.columns == {"question": "prompt", "q": "prompt"}


def test_run_id_from_environment_names_the_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUN_ID", "shared-id")
    cfg = compose_config(["stage=sft"])
    assert OmegaConf.to_container(cfg, resolve=True)["output_dir"] == "outputs/sft/shared-id"


CROSS_FIELD = [
    (["hw.precision=fp16"], "hw.precision=fp16 with hw.device=cpu (hw=cpu): fp16 autocast is a GPU feature"),
    (["quant=nf4", "peft=full"], "quant=nf4 with peft=full"),
    (["stage.batch_size=30"], "stage.batch_size=30 (completions per step) is not divisible by"),
    (["stage.num_generations=1"], "stage.num_generations=1"),
    # (the default GRPO recipe packs whole groups, which rounds the micro-batch up to 8: per-row here)
    (["hw.micro_batch=5", "stage.shared_prefix=false"], "not a multiple of hw.micro_batch=5"),
    (["reward.terms.correctness.function=corectness"], "unknown reward 'corectness'"),
    (["stage=dpo", "data=jsonl", "data.path=tests/fixtures/config/prompt_answer.jsonl"],
     "stage=dpo needs columns chosen, prompt, rejected"),
    (["stage=grpo", "data.format=messages"], "data.format=messages cannot feed stage=grpo"),
    (["max_steps=0", "stage.num_epochs=0"], "max_steps and stage.num_epochs are both <= 0"),
    (["stage.generation=vllm_colocate"], "stage.generation=vllm_colocate needs a GPU, but hw=cpu is device cpu"),
]


@pytest.mark.parametrize(("overrides", "message"), CROSS_FIELD, ids=lambda x: str(x))
def test_cross_field_rules(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        to_run_config(compose_config(overrides))
    assert message in str(err.value)


def test_validation_fails_before_torch_is_imported() -> None:
    """Compose + validate a bad config in a fresh interpreter and prove torch never loaded."""
    code = (
        "import sys\n"
        "from tests.helpers.runs import compose_config\n"
        "from pipeline.config.checks import to_run_config, ConfigError\n"
        "try:\n"
        "    to_run_config(compose_config(['hw.precision=fp16', 'stage=dpo', 'data=jsonl',\n"
        "                                  'data.path=tests/fixtures/config/prompt_answer.jsonl']))\n"
        "except ConfigError as e:\n"
        "    print('REFUSED', e)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=offline_env(), timeout=120)
    assert "REFUSED" in proc.stdout and "hw.precision" in proc.stdout and "chosen" in proc.stdout
    assert proc.stdout.strip().endswith("NO-TORCH"), proc.stdout + proc.stderr
