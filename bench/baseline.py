"""Plain-TRL baseline: the script a user writes from the TRL docs, for the workload a bench case describes.

    python bench/baseline.py OUT_DIR <the case's pipeline overrides...>

The overrides are composed with our config only to obtain the identical workload (weights, rows, global batch,
lengths, learning rate, steps, seed, dtype). The trainer is then built as the TRL docs show: the whole batch on
one device, TRL's own defaults for everything else (e.g. GRPO's gradient checkpointing), LoRA via peft_config.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from pipeline.config.enums import Device, PeftMethod, Precision
from pipeline.config.schema import RunConfig, register_configs

REPO = Path(__file__).resolve().parents[1]


def workload(overrides: list[str]) -> RunConfig:
    """The composed run config of a case's overrides (nothing is loaded)."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    from omegaconf import OmegaConf

    return OmegaConf.to_object(cfg)


def main(out_dir: Path, overrides: list[str]) -> None:
    from pipeline.train.model.build import model_dir

    run = workload(overrides)
    path = model_dir(run.model, run.paths.cache_dir)
    # TRL's TensorBoard logging goes to $TENSORBOARD_LOGGING_DIR: the harness reads both sides the same way.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(out_dir / "tb")

    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.data.loader import load_stage_data

    stage, hw = run.stage, run.hw
    rows = load_stage_data(run.data, stage.name, run.seed).train
    dtype = torch.bfloat16 if hw.precision == Precision.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path if run.model.tokenizer is None else run.model.tokenizer)
    tools = _tools(run, tokenizer)
    peft_config = None
    if run.peft.method == PeftMethod.lora:
        peft_config = LoraConfig(r=run.peft.r, lora_alpha=run.peft.alpha, target_modules=run.peft.target_modules,
                                 task_type="CAUSAL_LM")
    common = dict(
        output_dir=str(out_dir / "trl"), per_device_train_batch_size=stage.batch_size, max_steps=run.max_steps,
        learning_rate=stage.learning_rate, logging_steps=1, save_strategy="no", report_to="tensorboard",
        seed=run.seed, use_cpu=hw.device == Device.cpu, bf16=hw.precision == Precision.bf16,
    )
    trainer = _trainer(stage, model, tokenizer, rows, peft_config, common, tools)
    trainer.train()


def _tools(run: RunConfig, tokenizer) -> dict:
    """The case's tools as a TRL user passes them: the plain functions (no limits, no counters), the chat template
    that renders them and TRL's Qwen response template to parse the calls (TRL knows no rewritten template)."""
    if not run.env.active:
        return {}
    from trl.chat_template_utils import qwen3_template

    from pipeline.config.chat_templates import chat_template_path
    from pipeline.envs.registry import build_tool

    tokenizer.chat_template = chat_template_path(run.model.chat_template).read_text()
    tokenizer.response_template = qwen3_template
    return {"tools": [build_tool(t) for t in run.env.tools],
            "max_tool_calling_iterations": run.env.max_tool_calling_iterations}


def _trainer(stage, model, tokenizer, rows, peft_config, common, tools):
    if stage.name == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        from pipeline.rewards import build_reward_funcs

        funcs, weights = build_reward_funcs({"correctness": {}})
        turns = {"max_tool_calling_iterations": tools["max_tool_calling_iterations"]} if tools else {}
        args = GRPOConfig(**common, num_generations=stage.num_generations, reward_weights=weights,
                          max_completion_length=stage.max_completion_length, temperature=stage.temperature, **turns)
        return GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=rows,
                           processing_class=tokenizer, peft_config=peft_config, tools=tools.get("tools"))
    if stage.name == "sft":
        from trl import SFTConfig, SFTTrainer

        # counting non-padding tokens is measurement only; it does not change training
        args = SFTConfig(**common, max_length=stage.max_length, include_num_input_tokens_seen="non_padding")
        return SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                          peft_config=peft_config)
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**common, max_length=stage.max_length, beta=stage.beta,
                     include_num_input_tokens_seen="non_padding")
    return DPOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                      peft_config=peft_config)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
