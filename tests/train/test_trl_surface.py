"""The private TRL / transformers / torch / DeepSpeed names we rely on (pipeline/train/trl_surface.py) exist in the
installed libraries and are reached in a one-step GRPO run: an upgrade that renames or stops using one fails here
instead of silently turning a speed-up or a check into a no-op."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer, Qwen3ForCausalLM
from trl import GRPOConfig

import pipeline.train.levers.fast_sampling as fast_sampling
from pipeline.train import trl_surface
from pipeline.train.levers.grpo_trainer import GRPOLevers, LeveredGRPOTrainer
from pipeline.train.levers.lean_lm_head import lean_lm_head
from tests.helpers.tiny_models import TOKENIZER, tiny_config


def _owner(path: str) -> object:
    module, _, attribute = path.partition(":")
    owner = importlib.import_module(module)
    for name in attribute.split(".") if attribute else ():  # "torch:ops.mkldnn": torch.ops.mkldnn
        owner = getattr(owner, name)
    return owner


@pytest.mark.parametrize("hook", trl_surface.PRIVATE_HOOKS, ids=lambda h: f"{h.owner}.{h.name}")
def test_every_private_name_exists_in_the_installed_libraries(hook: trl_surface.Private) -> None:
    owner = _owner(hook.owner)
    # a method or module function is an attribute of its owner; an attribute set on instances (self._step = ...)
    # or read from objects (param._is_hf_initialized) is still spelled in the owner's source
    assert hasattr(owner, hook.name) or hook.name in inspect.getsource(owner), (
        f"{hook.owner} has no {hook.name} ({hook.why}): update pipeline/train/trl_surface.py and its lever")


def test_every_hook_is_reached_in_a_one_step_grpo_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draws = []
    inverse_cdf = fast_sampling._inverse_cdf
    # counts the sampler calls transformers routes through torch.multinomial while the swap is active
    monkeypatch.setattr(fast_sampling, "_inverse_cdf", lambda *a, **k: draws.append(1) or inverse_cdf(*a, **k))
    monkeypatch.setattr(trl_surface, "reached", trl_surface.Counter())
    for module in ("lean_lm_head", "grpo_trainer", "shared_prefix", "packed_linears"):
        monkeypatch.setattr(f"pipeline.train.levers.{module}.reached", trl_surface.reached)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = tiny_config(len(tokenizer))
    torch.manual_seed(0)
    # fp32 as our CPU profiles train (TRL would autocast to bf16, whose tiles TRL folds itself)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=4, report_to="none", max_steps=1,
                      save_strategy="steps", save_steps=1)
    trainer = LeveredGRPOTrainer(
        model=Qwen3ForCausalLM(config), args=args, processing_class=tokenizer,
        reward_funcs=lambda completions, **_: [float(len(c)) for c in completions],
        train_dataset=Dataset.from_list([{"prompt": "1+1="}] * 4), peft_config=LoraConfig(r=4, lora_alpha=8),
        levers=GRPOLevers(merge_lora=True, fast_sampling=True, shared_prefix=True, packed_linears=True),
    )
    with lean_lm_head():  # as stages/finish.py trains
        trainer.train()
    reached = trl_surface.reached
    assert reached["_generate"] >= 1 and reached["_generate_single_turn"] >= 1 and reached["compute_loss"] >= 1
    # both completions of a prompt share a micro-batch and are scored in one packed forward
    assert reached["_prepare_inputs"] >= 1 and reached["_get_per_token_logps_and_entropies"] >= 1
    # TRL's fused LM head asked whether to score only labelled positions and folded its tiles through ours
    assert reached["_use_triton"] >= 1 and reached["_forward_tile"] >= 1 and reached["_backward_tile"] >= 1
    assert reached["torch.multinomial"] >= 1 and draws, "transformers no longer samples through torch.multinomial"
    # oneDNN's packed linear (torch.ops.mkldnn) ran the sampling's Linear layers
    assert reached["packed linears"] >= 1
    logs = trl_surface.latest_completions(trainer)
    assert logs is not None and logs["prompt"] and logs["completion"] and logs["advantages"]
    trl_surface.load_checkpoint_weights(trainer, str(tmp_path / "checkpoint-1"))
    assert reached["_load_from_checkpoint"] == 1 and trainer.state.global_step == 1
