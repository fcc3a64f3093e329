"""The peft group's LoRA variants: composed into peft's own LoraConfig; combinations that cannot work refused before
anything loads, naming the key and the fix; target module names checked against the built model."""

from __future__ import annotations

import pytest
from transformers import Qwen3ForCausalLM

from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.peft_checks import target_problems
from pipeline.train.model.build import lora_config
from tests.helpers.runs import compose_config
from tests.helpers.tiny_models import tiny_config


def _run_config(*overrides: str):
    return to_run_config(compose_config(["model=tiny", *overrides]))


def test_variants_reach_peft_loraconfig() -> None:
    cfg = _run_config("peft.use_dora=true", "peft.use_rslora=true", "peft.init=olora", "peft.use_dora=false",
                      "peft.modules_to_save=[lm_head]", "peft.target_modules=[q_proj,v_proj]")
    lora = lora_config(cfg.peft)
    assert lora.use_rslora and not lora.use_dora and lora.init_lora_weights == "olora"
    assert lora.modules_to_save == ["lm_head"] and set(lora.target_modules) == {"q_proj", "v_proj"}
    plain = lora_config(_run_config().peft)
    assert plain.init_lora_weights is True and plain.target_modules == "all-linear" and plain.modules_to_save is None


@pytest.mark.parametrize(("overrides", "message"), [
    (["peft.init=pissa", "peft.use_dora=true"], "peft.init=pissa with peft.use_dora=true"),
    (["peft.init=olora", "quant=nf4"], "peft.init=olora with quant=nf4"),
    (["peft.init=pissa", "zero=zero3"], "Use zero=zero2"),
    (["peft=full", "peft.use_dora=true"], "they apply to LoRA only"),
    (["peft.r=0"], "peft.r=16"),
    (["peft.target_modules=[]"], "peft.target_modules=[]"),
])
def test_combinations_that_cannot_work_are_refused_before_loading(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _run_config(*overrides)
    assert message in str(err.value)


def test_an_unknown_init_fails_at_compose_time() -> None:
    with pytest.raises(Exception, match="init"):
        compose_config(["model=tiny", "peft.init=loftq"])


def test_target_names_the_model_lacks_are_named_with_its_linear_layers() -> None:
    model = Qwen3ForCausalLM(tiny_config(64))
    peft = _run_config("peft.target_modules=[q_proj,qkv]", "peft.modules_to_save=[norm]").peft
    [problem] = target_problems(model, peft)
    assert "peft.target_modules=['q_proj', 'qkv']" in problem and "no module named qkv" in problem
    assert "q_proj" in problem.split("linear layers are")[1] and "all-linear" in problem
    assert target_problems(model, _run_config().peft) == []
