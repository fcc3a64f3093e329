"""PiSSA / OLoRA change the base weights: final/ is saved converted, a plain LoRA whose config asks for no
decomposition at load, so the original base weights untouched plus the saved adapter is the trained model (a loader
other than peft, e.g. a serving engine's LoRA, never decomposes: the raw adapter would not fit it)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Qwen3ForCausalLM

from pipeline.config.run_dir import RunDir
from pipeline.train.checkpoint.peft_init import INIT_DIR, InitialAdapter, mutates_base, save_converted
from tests.helpers.tiny_models import tiny_config


def _base() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    return Qwen3ForCausalLM(tiny_config(128)).eval()


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_the_converted_adapter_on_the_original_base_is_the_trained_model(tmp_path, init: str) -> None:
    model = get_peft_model(_base(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                               init_lora_weights=init, modules_to_save=["norm"]))
    assert mutates_base(model) and not mutates_base(get_peft_model(_base(), LoraConfig(r=4)))
    run_dir = RunDir(tmp_path / "run")
    InitialAdapter(run_dir).on_train_begin(None, SimpleNamespace(global_step=0), None, model=model)
    assert (run_dir.root / INIT_DIR / "adapter_model.safetensors").exists()
    with torch.no_grad():  # "training": every adapter weight moves
        for name, param in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.05)
    ids = torch.tensor([[5, 17, 33, 2, 9]])
    with torch.no_grad():
        trained = model(ids).logits
    raw, converted = tmp_path / "raw", tmp_path / "converted"
    model.save_pretrained(str(raw))
    save_converted(model, run_dir, converted)
    assert '"init_lora_weights": true' in (converted / "adapter_config.json").read_text()
    assert f'"init_lora_weights": "{init}"' in (raw / "adapter_config.json").read_text()
    original = _base()
    weight = original.model.layers[0].self_attn.q_proj.weight.clone()
    with torch.no_grad():
        loaded = PeftModel.from_pretrained(original, str(converted))
        on_original = loaded(ids).logits
    assert torch.equal(loaded.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, weight)
    torch.testing.assert_close(on_original, trained, rtol=1e-4, atol=1e-5)
