"""The per-GPU memory estimate: LoRA parameter counts, what each ZeRO stage shards, quantized weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.plan import RunPlan, plan_run
from pipeline.launch.memory import estimate, lora_params, model_shapes
from tests.helpers.runs import compose_config


def typed(overrides: list[str]) -> RunPlan:
    return plan_run(compose_config(overrides), Path("/tmp/run"))


def test_lora_count_matches_peft_for_qwen2_5_1_5b() -> None:
    shapes = model_shapes(typed(["model=qwen2.5_1.5b_instruct"]).cfg.model)
    assert round(shapes.params / 1e6) == 1544  # Qwen2.5-1.5B: 1.54B with tied embeddings
    # peft's print_trainable_parameters for r=16 on all linear layers of Qwen2.5-1.5B
    assert lora_params(shapes, 16, "all-linear") == 18_464_768
    assert lora_params(shapes, 16, ["q_proj", "v_proj"]) == 28 * 16 * ((1536 + 1536) + (1536 + 256))


def test_zero_stages_shrink_what_each_gpu_holds() -> None:
    base = ["model=qwen2.5_1.5b_instruct", "peft=full", "hw=8xh100"]
    parts = {z: estimate(typed([*base, f"zero={z}"])).parts for z in ("none", "zero1", "zero2", "zero3",
                                                                        "zero3_offload")}
    assert parts["zero1"]["optimizer"] == pytest.approx(parts["none"]["optimizer"] * 12 / 4 / 8)
    assert parts["zero2"]["gradients"] == pytest.approx(parts["none"]["gradients"] / 8)
    assert parts["zero3"]["weights"] == pytest.approx(parts["none"]["weights"] / 8)
    assert parts["zero3_offload"]["weights"] == 0 and parts["zero3_offload"]["optimizer"] == 0
    # bf16 weights: 2 bytes per parameter
    assert parts["none"]["weights"] == pytest.approx(1.544e9 * 2 / 2**30, rel=1e-3)


def test_quantized_weights_are_smaller_but_embeddings_stay_16_bit() -> None:
    none, nf4 = (estimate(typed(["model=qwen2.5_1.5b_instruct", "hw=single_4090", f"quant={q}"]))
                 for q in ("none", "nf4"))
    assert nf4.parts["weights"] < none.parts["weights"] / 2.5
    embedding_gib = 151936 * 1536 * 2 / 2**30
    assert nf4.parts["weights"] > embedding_gib
